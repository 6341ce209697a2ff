"""Property-based fuzzing of /openapi.json with schemathesis, against the real API over a real
buffer: no 5xx and no crash for anything it generates, valid (positive) or not (negative),
and every 201 of POST /v1/records names records that really are in the SQLite file.

Bounded for CI: at most RECORDS_EXAMPLES / MAX_EXAMPLES cases per operation and mode
(~8 s a mode here), Hypothesis derandomized and without an example database; schemathesis
still varies some cases between runs (the number of 201s differed), so a failure prints
its case in full for reproduction.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode

from tests.api.conftest import TOKEN, Api, stored
from tests.api.test_server import Serve

MAX_EXAMPLES = 40
RECORDS_EXAMPLES = 150
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def fuzz(api: Api, op: Any, mode: GenerationMode, seen: dict[str, int]) -> None:
    examples = RECORDS_EXAMPLES if op.path == "/v1/records" else MAX_EXAMPLES

    @given(case=op.as_strategy(generation_mode=mode))
    @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    def run(case: Any) -> None:
        response = case.call(base_url=api.url, headers=AUTH, timeout=30)
        case.validate_response(response, checks=[not_a_server_error])
        key = f"{op.method.upper()} {op.path} {response.status_code}"
        seen[key] = seen.get(key, 0) + 1
        if op.path == "/v1/records" and response.status_code == 201:
            ids = response.json()["ids"]
            assert set(ids) <= set(stored(api.sink)), "a 201 for records that are not in the buffer"

    try:
        run()
    except Unsatisfiable:
        # Negative mode: an operation with no parameters and no body has nothing to break.
        assert mode is GenerationMode.NEGATIVE and not op.body and not op.query, op.path


@pytest.mark.slow
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["positive", "negative"])
def test_openapi_fuzz_no_server_error_and_every_201_is_stored(serve: Serve, mode: GenerationMode) -> None:
    api = serve()
    schema = schemathesis.openapi.from_url(f"{api.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/v1/records", "/v1/status", "/metrics"}
    seen: dict[str, int] = {}
    for op in operations:
        fuzz(api, op, mode, seen)
    print(mode.value, dict(sorted(seen.items())))
    if mode is GenerationMode.POSITIVE:
        # Many generated records are still refused (a GTIN's check digit, `at` past tomorrow,
        # printable ids: rules a JSON schema cannot say); some must get through.
        assert seen.get("POST /v1/records 201", 0) > 0, f"no valid record was generated: {seen}"
