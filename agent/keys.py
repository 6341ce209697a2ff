"""Moved to wire.keys; this name stays only for tests/ops (sandbox_workload, test_install) until they import wire."""

from wire.keys import *  # noqa: F403
from wire.keys import generate_key_file as generate_key_file
from wire.keys import load_private_key as load_private_key
from wire.keys import public_pem as public_pem
