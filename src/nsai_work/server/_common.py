"""What every route of the HTTP API does first: answers and problems, the caller (its key,
checked and charged; ``Refused`` without one), ``Idempotency-Key``, and query parameters read
with the library's errors."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import msgspec
from litestar import Request, Response

from .._errors import ValidationError, WorkError
from .._wire import PROBLEM_BASE, PROBLEM_TYPE, Problem, problem_for, retry_after_header
from ._idempotency import Answer, IdempotencyCache
from ._keys import ApiKey
from ._service import Service

_encode = msgspec.json.Encoder().encode
_JSON = "application/json"


class Refused(Exception):
    """A request refused before any verb: a missing or bad key (401), a key without the right
    (403). ``error`` is the class the client raises (``ConfigurationError``)."""

    def __init__(self, status: int, slug: str, title: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.slug, self.title, self.detail = status, slug, title, detail


# ---- answers ------------------------------------------------------------------------------------


def _answer(value: Any, status: int = 200) -> Answer:
    return Answer(status, _encode(value), _JSON)


def _send(answer: Answer) -> Response[bytes]:
    return Response(
        answer.body, status_code=answer.status, media_type=answer.media_type, headers=answer.headers
    )


def _problem_answer(problem: Problem) -> Answer:
    headers = {}
    retry_after = retry_after_header(problem)
    if retry_after is not None:
        headers["Retry-After"] = retry_after
    if problem.status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="nsai-work"'
    return Answer(problem.status, _encode(problem), PROBLEM_TYPE, headers)


def _refused_problem(exc: Refused, instance: str) -> Problem:
    return Problem(
        type=PROBLEM_BASE + exc.slug,
        title=exc.title,
        status=exc.status,
        detail=exc.detail,
        error="ConfigurationError",
        instance=instance,
    )


# ---- the caller ---------------------------------------------------------------------------------


def _service(request: Request[Any, Any, Any]) -> Service:
    return request.app.state.service  # type: ignore[no-any-return]


def _header_token(request: Request[Any, Any, Any]) -> str | None:
    """The key a request carries in its headers (``Authorization: Bearer`` or ``X-API-Key``)."""
    headers = request.headers
    token = headers.get("x-api-key")
    authorization = headers.get("authorization")
    if token is None and authorization is not None:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer":
            token = None
    return token or None


def _caller(
    request: Request[Any, Any, Any], *, admin: bool = False, token: str | None = None
) -> tuple[Service, ApiKey]:
    """The service and the request's key (``Refused`` without a valid one, or without the
    admin right when ``admin``); the key's rate is charged. ``token``: the key when the route
    found it elsewhere than in the headers; without any, a dashboard session's
    (``_session``)."""
    service = _service(request)
    token = _header_token(request) or token
    if not token:  # a dashboard session (its cookie, and its CSRF token on a change)
        from ._session import session_token

        token = session_token(request)
    if not token:
        raise Refused(
            401,
            "unauthorized",
            "An API key is needed",
            "no API key: send `Authorization: Bearer <key>` (keys come from `nsai-work keys "
            "create`)",
        )
    key = service.keys.authenticate(token.strip())
    if key is None:
        raise Refused(
            401, "unauthorized", "The API key is refused", "the API key is unknown or revoked"
        )
    if admin and not key.admin:
        raise Refused(
            403,
            "forbidden",
            "An admin key is needed",
            f"{request.method} {request.url.path} needs an admin key; {key.who} is a tenant's",
        )
    service.keys.charge(key)
    return service, key


async def _idempotent(
    request: Request[Any, Any, Any], key: ApiKey, make: Callable[[], Awaitable[Answer]]
) -> Response[bytes]:
    """The answer of ``make()``, or of the first request with the same ``Idempotency-Key``."""
    idempotency_key = request.headers.get("idempotency-key")
    if idempotency_key is None:
        return _send(await make())

    async def answered() -> Answer:
        try:
            return await make()
        except WorkError as exc:
            return _problem_answer(problem_for(exc, request.url.path))

    cache: IdempotencyCache = request.app.state.idempotency
    fingerprint = b"\n".join(
        [
            request.method.encode(),
            request.url.path.encode(),
            request.url.query.encode(),
            await request.body(),
        ]
    )
    return _send(await cache.run(key.id, idempotency_key, fingerprint, answered))


# ---- query parameters ---------------------------------------------------------------------------


def _text(request: Request[Any, Any, Any], name: str) -> str | None:
    value = request.query_params.get(name)
    if value is not None and not value:
        raise ValidationError(f"{name} is not empty when given", path=f"$.{name}")
    return value


def _number(request: Request[Any, Any, Any], name: str, default: float, kind: type) -> Any:
    value = request.query_params.get(name)
    if value is None:
        return default
    try:
        return kind(value)
    except ValueError:
        raise ValidationError(
            f"{name} is {'an integer' if kind is int else 'a number'}, got {value!r}",
            path=f"$.{name}",
        ) from None


def _instant(request: Request[Any, Any, Any], name: str) -> datetime | None:
    value = request.query_params.get(name)
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise ValidationError(
            f"{name} is an RFC 3339 time with its offset (2026-01-31T12:00:00Z), got {value!r}",
            path=f"$.{name}",
        )
    return moment


def _enum(request: Request[Any, Any, Any], name: str, kind: type[Any]) -> Any:
    value = request.query_params.get(name)
    if value is None:
        return None
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(repr(member.value) for member in kind)
        raise ValidationError(
            f"Invalid enum value {value!r}; expected one of {allowed}", path=f"$.{name}"
        ) from None
