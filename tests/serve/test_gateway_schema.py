"""schemathesis against the gateway's own OpenAPI schema: generated requests (valid and not) to every
route of `sm70 serve upstream=...` in front of a real engine, with a key. Every answer has a status
the schema documents, the documented content type and body shape; no 5xx except the documented
upstream errors (502/503) with their JSON error body. A bounded number of cases per route."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings

from .conftest import Engine, free_port, start_gateway

schemathesis = pytest.importorskip("schemathesis")
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance, response_schema_conformance, status_code_conformance)

CASES = 12  # per route: a bound on the run, not a proof


@pytest.fixture(scope="module")
def gateway(tiny_model, keys, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("schema")
    engine = Engine(tiny_model, tmp, free_port()).wait()
    gw = start_gateway(tmp, [engine.url + "/v1"], keys=str(keys["file"]), default_max_tokens=8)
    gw.key = keys["alice"]
    yield gw
    gw.stop()
    engine.kill()


def only_documented_server_errors(ctx, response, case):
    if response.status_code >= 500:
        assert response.status_code in (502, 503), f"undocumented {response.status_code}: {response.text[:300]}"
        assert "error" in response.json()


def test_gateway_answers_what_its_schema_documents(gateway):
    from hypothesis import given

    # the schema is not served (openapi_url=None: no route an attacker could map); the app still has it
    schema = schemathesis.openapi.from_dict(gateway.app.app.openapi())
    checks = [status_code_conformance, content_type_conformance, response_schema_conformance,
              only_documented_server_errors]
    routes = []
    for result in schema.get_all_operations():
        operation = result.ok()
        routes.append(operation.label)

        @given(case=operation.as_strategy())
        @settings(max_examples=CASES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def run(case):
            if isinstance(case.body, dict) and isinstance(case.body.get("max_tokens"), int):
                case.body["max_tokens"] = min(case.body["max_tokens"], 16)  # bound the run time
            case.call_and_validate(base_url=gateway.url, headers={"Authorization": f"Bearer {gateway.key}"},
                                   timeout=60, checks=checks)

        run()
    assert "POST /v1/chat/completions" in routes and "POST /v1/completions" in routes and len(routes) == 8
