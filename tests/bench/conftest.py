"""The API fixtures (a real ApiComponent over a real buffer) for the benchmark's own tests."""

from tests.api.conftest import serve  # noqa: F401
