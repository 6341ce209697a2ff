"""Moved to wire.cose; this name stays only for tests/ops (sandbox_workload) until they import wire."""

from wire.cose import *  # noqa: F403
from wire.cose import kid_for as kid_for
