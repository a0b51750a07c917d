"""The HTTP API as any language sees it: raw requests to a real server (uvicorn on loopback).
Keys and 401/403, problems (RFC 9457) naming the field and rule, tenant isolation on every
route of the OpenAPI document, Idempotency-Key, body and rate limits with Retry-After, list
filters, and the committed OpenAPI document."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import nsai_work as work
from nsai_work.server import KeyRing, create_app
from nsai_work.server._app import HANDLERS
from nsai_work.server._openapi import ROUTES, document, render
from tests._service import Running, running_server

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def api() -> Iterator[Running]:
    with running_server(max_body_bytes=64 * 1024, max_waiting=50) as running:
        yield running


def _job(kind: str, tenant_id: str = "acme", **fields: Any) -> dict[str, Any]:
    return {"kind": kind, "tenant_id": tenant_id, **fields}


def _problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["type"].startswith("https://nsai-work.dev/problems/")
    assert body["title"]
    assert body["detail"]
    return body


# ---- keys ---------------------------------------------------------------------------------------


def test_a_missing_malformed_unknown_or_revoked_key_answers_401(api: Running) -> None:
    body = _problem(api.call("GET", "/v1/jobs", None), 401)
    assert "Authorization: Bearer" in body["detail"]
    response = api.call("GET", "/v1/jobs", None)
    assert response.headers["www-authenticate"] == 'Bearer realm="nsai-work"'
    for token in ("nope", "nsw_0000000000000000_" + "a" * 43, api.acme[:-1] + "x"):
        assert _problem(api.call("GET", "/v1/jobs", token), 401)["error"] == "ConfigurationError"
    key, token = api.keys.create(tenant_id="acme")
    assert api.call("GET", "/v1/auth", token).json() == {
        "key_id": key.id,
        "tenant_id": "acme",
        "admin": False,
    }
    api.keys.revoke(key.id)
    assert _problem(api.call("GET", "/v1/auth", token), 401)["detail"] == (
        "the API key is unknown or revoked"
    )
    x_api_key = api.http.get("/v1/auth", headers={"X-API-Key": api.admin})
    assert x_api_key.json()["admin"] is True


def test_a_tenants_key_on_an_admin_route_answers_403(api: Running) -> None:
    body = _problem(api.call("GET", "/v1/tenants", api.acme), 403)
    assert "needs an admin key" in body["detail"]
    assert api.call("GET", "/v1/tenants", api.admin).status_code == 200
    put = api.call("PUT", "/v1/tenants/acme", api.acme, json={"weight": 5})
    assert _problem(put, 403)["error"] == "ConfigurationError"


def test_keys_are_kept_hashed_in_their_file(tmp_path: Path) -> None:
    ring = KeyRing(tmp_path / "keys.json")
    key, token = ring.create(tenant_id="acme", name="ci")
    text = (tmp_path / "keys.json").read_text()
    secret = token.split("_", 2)[2]
    assert secret not in text
    assert key.secret_sha256 in text
    other = KeyRing(tmp_path / "keys.json")  # another server process on the same file
    assert other.authenticate(token) == key
    ring.revoke(key.id)
    assert other.authenticate(token) is None
    with pytest.raises(work.ValidationError, match="either a tenant's"):
        ring.create()


# ---- problems -----------------------------------------------------------------------------------


def test_a_bad_field_is_a_problem_naming_its_path_and_rule(api: Running) -> None:
    body = _problem(
        api.call("POST", "/v1/jobs", api.acme, json=_job("x", resources={"cpu": -1})), 422
    )
    assert (body["error"], body["path"], body["rule"]) == (
        "ValidationError",
        "$.resources.cpu",
        "Expected `float` >= 0.0",
    )
    batch = {"jobs": [_job("tool_call", payload={"tool": "echo"}), _job("x", priority="urgent")]}
    body = _problem(api.call("POST", "/v1/jobs/batch", api.acme, json=batch), 422)
    assert (body["path"], body["index"]) == ("$.priority", 1)
    assert "expected one of 'realtime'" in body["rule"]
    body = _problem(api.call("POST", "/v1/jobs", api.acme, content=b"{nope"), 422)
    assert "not valid JSON" in body["detail"]
    body = _problem(api.call("GET", "/v1/jobs?limit=zero", api.acme), 422)
    assert (body["path"], body["rule"]) == ("$.limit", "limit is an integer, got 'zero'")
    body = _problem(api.call("GET", "/v1/jobs?created_after=yesterday", api.acme), 422)
    assert body["path"] == "$.created_after"
    assert _problem(api.call("GET", "/v2/jobs", api.acme), 404)["error"] == "NotFoundError"
    assert _problem(api.call("DELETE", "/v1/jobs", api.acme), 405)["error"] == "ValidationError"


def test_a_body_over_the_limit_answers_413(api: Running) -> None:
    big = _job("tool_call", payload={"tool": "echo", "blob": "x" * 70_000})
    body = _problem(api.call("POST", "/v1/jobs", api.acme, json=big), 413)
    assert "65536 bytes" in body["detail"]


def test_429_and_503_carry_retry_after(api: Running, handlers: Callable[..., str]) -> None:
    _, limited = api.keys.create(tenant_id="acme", rate=0.5, burst=1)
    assert api.call("GET", "/v1/auth", limited).status_code == 200
    response = api.call("GET", "/v1/auth", limited)
    body = _problem(response, 429)
    assert body["error"] == "RateLimitedError"
    assert response.headers["retry-after"] == "2"
    kind = handlers(lambda job: None)
    flood = {"jobs": [_job(kind, tenant_id="flood") for _ in range(51)]}  # max_waiting=50
    response = api.call("POST", "/v1/jobs/batch", api.admin, json=flood)
    assert _problem(response, 503)["error"] == "QueueFullError"
    assert response.headers["retry-after"] == "1"


# ---- idempotency --------------------------------------------------------------------------------


def test_a_retried_post_with_its_idempotency_key_gets_the_first_answer(api: Running) -> None:
    job = _job("tool_call", namespace="idem", payload={"tool": "echo"})
    headers = {"Idempotency-Key": "order-42"}
    first = api.call("POST", "/v1/jobs", api.acme, json=job, headers=headers)
    again = api.call("POST", "/v1/jobs", api.acme, json=job, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    listed = api.call("GET", "/v1/jobs?namespace=idem", api.acme).json()["jobs"]
    assert [j["id"] for j in listed] == [first.json()["id"]]
    other = dict(job, payload={"tool": "echo", "n": 2})
    body = _problem(api.call("POST", "/v1/jobs", api.acme, json=other, headers=headers), 422)
    assert body["path"] == "$.headers.Idempotency-Key"
    # another key's Idempotency-Key is its own
    theirs = api.call(
        "POST", "/v1/jobs", api.globex, json=dict(job, tenant_id="globex"), headers=headers
    )
    assert theirs.status_code == 201
    assert theirs.json()["id"] != first.json()["id"]


# ---- listing ------------------------------------------------------------------------------------


def test_list_filters_by_priority_and_time_and_pages(api: Running) -> None:
    jobs = [
        _job("tool_call", namespace="filters", priority=p, payload={"tool": "echo"})
        for p in ("batch", "realtime", "batch", "offline", "batch")
    ]
    made = api.call("POST", "/v1/jobs/batch", api.acme, json={"jobs": jobs}).json()["jobs"]
    batch_ids = [j["id"] for j in reversed(made) if j.get("priority", "batch") == "batch"]
    page = api.call("GET", "/v1/jobs?namespace=filters&priority=batch&limit=2", api.acme).json()
    rest = api.call(
        "GET",
        "/v1/jobs",
        api.acme,
        params={
            "namespace": "filters",
            "priority": "batch",
            "limit": 2,
            "cursor": page["next_cursor"],
        },
    ).json()
    assert [j["id"] for j in page["jobs"] + rest["jobs"]] == batch_ids
    middle = made[2]["created_at"]
    after = api.call(
        "GET", "/v1/jobs", api.acme, params={"namespace": "filters", "created_after": middle}
    ).json()
    assert [j["id"] for j in after["jobs"]] == [j["id"] for j in reversed(made[2:])]
    before = api.call(
        "GET", "/v1/jobs", api.acme, params={"namespace": "filters", "created_before": middle}
    ).json()
    assert [j["id"] for j in before["jobs"]] == [j["id"] for j in reversed(made[:2])]


# ---- isolation ----------------------------------------------------------------------------------


def _request_for(route: Any, job_id: str) -> tuple[str, str, dict[str, Any]]:
    path = route.path.replace("{job_id}", job_id).replace("{tenant_id}", "globex")
    kwargs: dict[str, Any] = {}
    if route.path == "/v1/jobs/wait":
        kwargs["json"] = {"job_ids": [job_id], "timeout": 0}
    elif route.path == "/v1/jobs":
        kwargs["params"] = {"tenant_id": "globex"}
    elif route.path.endswith("/wait"):
        kwargs["params"] = {"timeout": 0}
    elif route.method == "post" and route.path.startswith("/v1/jobs/"):
        kwargs["json"] = {}
    return route.method.upper(), path, kwargs


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: f"{r.method.upper()} {r.path}")
def test_tenant_a_cannot_reach_tenant_bs_jobs_through_any_route(api: Running, route: Any) -> None:
    """On every route that names a job or a tenant, globex's job id answers acme's key exactly
    as an unknown id does; routes that list or count answer acme's jobs only."""
    theirs = api.call(
        "POST", "/v1/jobs", api.globex, json=_job("tool_call", "globex", payload={"tool": "echo"})
    ).json()["id"]
    api.call("GET", f"/v1/jobs/{theirs}/wait", api.globex, params={"timeout": 10})
    unknown = "01900000-0000-7000-8000-000000000000"
    method, path, kwargs = _request_for(route, theirs)
    if route.method == "post" and route.path in ("/v1/jobs", "/v1/jobs/batch"):
        job = _job("tool_call", "globex", payload={"tool": "echo"})
        body = {"jobs": [job]} if route.path.endswith("batch") else job
        refused = api.call(method, path, api.acme, json=body)
        assert _problem(refused, 422)["path"] == "$.tenant_id"
        return
    hidden = api.call(method, path, api.acme, **kwargs)
    if "{job_id}" in route.path or route.path == "/v1/jobs/wait":
        method, path, kwargs = _request_for(route, unknown)
        missing = api.call(method, path, api.acme, **kwargs)
        assert hidden.status_code == missing.status_code == 404
        assert hidden.text.replace(theirs, "ID") == missing.text.replace(unknown, "ID")
    elif route.auth == "admin":
        assert _problem(hidden, 403)["error"] == "ConfigurationError"
    elif route.path in ("/v1/jobs", "/v1/tenants/{tenant_id}"):
        assert _problem(hidden, 422)["path"] == "$.tenant_id"  # not acme's to see
    else:
        assert theirs not in hidden.text
        assert "globex" not in hidden.text or route.path == "/openapi.json"


# ---- the OpenAPI document -----------------------------------------------------------------------


def test_the_committed_openapi_document_is_current() -> None:
    committed = ROOT / "schema" / "openapi.json"
    assert committed.read_text() == render(), (
        "schema/openapi.json is stale: run `make schema` and commit it"
    )


def test_the_document_lists_every_route_of_the_app() -> None:
    served = {
        (method.lower(), re.sub(r":\w+}", "}", path))
        for handler in HANDLERS
        for path in handler.paths
        for method in handler.http_methods
    }
    documented = {(route.method, route.path) for route in ROUTES}
    assert served - {("get", "/docs")} == documented
    assert document()["openapi"] == "3.1.0"


def test_the_served_document_and_its_docs_page(api: Running) -> None:
    served = api.http.get("/openapi.json")
    assert json.loads(served.text) == document()
    page = api.http.get("/docs")
    assert page.status_code == 200
    assert "SwaggerUIBundle" in page.text


def test_create_app_needs_keys() -> None:
    with pytest.raises(work.ConfigurationError, match="keys is needed"):
        create_app()


def test_tool_exports_say_what_they_leave_out(api: Running) -> None:
    plain = api.call("GET", "/v1/tools/export", api.acme).json()
    assert "echo" in [tool["function"]["name"] for tool in plain["tools"]]
    assert plain["left_out"] == []
    strict = api.call("GET", "/v1/tools/export?strict=true", api.acme).json()
    assert "echo" not in [tool["function"]["name"] for tool in strict["tools"]]
    assert any("'echo'" in why for why in strict["left_out"])
    gemini = api.call("GET", "/v1/tools/export?format=gemini", api.acme).json()
    assert "echo" in [tool["name"] for tool in gemini["tools"]]
    body = _problem(api.call("GET", "/v1/tools/export?format=claude", api.acme), 422)
    assert body["path"] == "$.format"
