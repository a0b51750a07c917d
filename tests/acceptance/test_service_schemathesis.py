"""Schemathesis against the served OpenAPI document: requests generated from the document,
valid and not, to a real server. No answer is a 5xx, and every 4xx is a problem that names
what is wrong (RFC 9457: type, title, status, detail; and the field's path for a 422).
Bounded: a few examples per operation, so the run takes seconds."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from nsai_work.server._openapi import ROUTES
from tests._service import Running, running_server


@pytest.fixture(scope="module")
def served() -> Iterator[Running]:
    with running_server() as running:
        yield running


@pytest.fixture(scope="module")
def api_schema(served: Running) -> Any:
    return schemathesis.openapi.from_url(f"{served.url}/openapi.json")


def names_the_problem(ctx: Any, response: Any, case: Any) -> bool:
    """A 4xx answer is application/problem+json naming the problem."""
    if not 400 <= response.status_code < 500:
        return True
    kind = response.headers.get("content-type", [""])
    kind = kind[0] if isinstance(kind, list) else kind
    assert kind == "application/problem+json", f"a {response.status_code} is {kind!r}"
    body = response.json()
    assert body["status"] == response.status_code
    assert body["title"]
    assert body["detail"]
    assert body["type"]
    assert body["error"]
    if response.status_code == 422:
        assert body["path"].startswith("$")
        assert body["rule"]
    return True


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
@pytest.mark.parametrize("route", ROUTES, ids=lambda r: f"{r.method.upper()} {r.path}")
def test_no_5xx_and_every_4xx_names_the_problem(
    route: Any, mode: GenerationMode, served: Running, api_schema: Any
) -> None:
    operation = api_schema[route.path][route.method]
    key = served.admin if route.path.startswith("/v1/tenants") else served.acme
    calls: list[int] = []

    @given(case=operation.as_strategy(mode))
    @settings(
        max_examples=15,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def check(case: Any) -> None:
        response = case.call(headers={"Authorization": f"Bearer {key}"}, timeout=30)
        calls.append(response.status_code)
        case.validate_response(response, checks=[not_a_server_error, names_the_problem])

    try:
        check()
    except hypothesis.errors.Unsatisfiable:  # no negative case for a route without inputs
        assert mode == GenerationMode.NEGATIVE
    assert calls or mode == GenerationMode.NEGATIVE
