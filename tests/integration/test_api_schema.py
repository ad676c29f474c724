"""schemathesis, the OpenAPI fuzzer, against a live API process's own schema: whatever the schema lets a client
send (and what it does not), the API answers no 5xx, only documented statuses, in the documented shapes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support.processes import Stack
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.integration

# The admin acting for one school reaches every route, /cache/stats included.
HEADERS = {"Authorization": "Bearer demo-admin", "X-School-Id": "123"}
EXAMPLES = 40  # per operation and mode: about 700 requests, a few seconds
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def live(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = Stack(tmp_path_factory.mktemp("schema"), redis_server.url, MAX_INPUT_CHARS="200")
    yield running
    running.stop()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_the_api_keeps_its_schema(live: Stack, mode: GenerationMode) -> None:
    """Generated requests that fit the schema (and, negative, that do not) get documented statuses and bodies
    for every operation, and never a 5xx."""
    schema = schemathesis.openapi.from_url(live.url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 8

    for operation in operations:
        if mode is GenerationMode.NEGATIVE and not (len(operation.body) or len(operation.query)):
            continue  # nothing a client sends can violate the schema of, e.g., GET /healthz

        @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=operation.as_strategy(generation_mode=mode))
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate(base_url=live.url, headers=HEADERS, checks=CHECKS, timeout=10)

        check()
