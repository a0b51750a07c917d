"""Browser sessions for the dashboard: an API key traded for an HttpOnly cookie and a CSRF token.

A browser's ``EventSource`` cannot send headers, and a key kept in page JavaScript is a key any
injected script can read. So the dashboard's login page posts the key once (``POST
/ui/login``, JSON only, which a cross-site form cannot send), and gets back:

- the ``nsai_work_session`` cookie: a random session id, ``HttpOnly`` (scripts never see it),
  ``SameSite=Strict`` (other sites' pages never send it), ``Secure`` over HTTPS;
- a CSRF token, which the page sends back as ``X-CSRF-Token`` on every call that changes
  something (any method but GET and HEAD): a request that carries the cookie without the token
  is refused (403), so the cookie alone never acts.

Every route that reads a key in its headers also accepts a session (``_common._caller``): the
same verbs, the same tenant scoping, the same rate. The server keeps the sessions in memory
(``Sessions``): each lasts ``ttl_s`` (12 hours) and ends at logout; the key itself is checked
again on every request, so a revoked key ends its sessions at once. Sessions are one server
process's: behind several processes, pin a browser to one (or log in again).
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from typing import Any, Final

import msgspec
from litestar import Request, Response, get, post
from litestar.datastructures import Cookie

from .._errors import ValidationError
from ._common import Refused, _answer, _send, _service

__all__ = ["CSRF_HEADER", "SESSION_COOKIE", "Sessions", "login", "logout", "session_info"]

SESSION_COOKIE: Final = "nsai_work_session"
CSRF_HEADER: Final = "x-csrf-token"
_SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})


class _Session:
    __slots__ = ("csrf", "expires", "token")

    def __init__(self, token: str, csrf: str, expires: float) -> None:
        self.token, self.csrf, self.expires = token, csrf, expires


class Sessions:
    """The open sessions of one server process: id -> (key token, CSRF token, expiry). At most
    ``max_sessions`` (the oldest go first)."""

    def __init__(self, *, ttl_s: float = 12 * 3600.0, max_sessions: int = 10_000) -> None:
        self.ttl_s = ttl_s
        self.max_sessions = max_sessions
        self._lock = threading.Lock()
        self._open: dict[str, _Session] = {}

    def open(self, token: str) -> tuple[str, str]:
        """A new session for a key's token: its id and its CSRF token."""
        session_id, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        now = time.monotonic()
        with self._lock:
            if len(self._open) >= self.max_sessions:
                for old in [s for s, v in self._open.items() if v.expires <= now]:
                    del self._open[old]
                while len(self._open) >= self.max_sessions:
                    del self._open[next(iter(self._open))]
            self._open[session_id] = _Session(token, csrf, now + self.ttl_s)
        return session_id, csrf

    def get(self, session_id: str) -> _Session | None:
        """The live session of an id, or None (unknown or expired)."""
        with self._lock:
            session = self._open.get(session_id)
            if session is not None and session.expires <= time.monotonic():
                del self._open[session_id]
                session = None
        return session

    def close(self, session_id: str) -> None:
        """End a session (logout)."""
        with self._lock:
            self._open.pop(session_id, None)

    def __len__(self) -> int:
        return len(self._open)


def _sessions(request: Request[Any, Any, Any]) -> Sessions | None:
    return getattr(request.app.state, "sessions", None)


def session_token(request: Request[Any, Any, Any]) -> str | None:
    """The key token of the request's session cookie, or None without one. A state-changing
    request (not GET or HEAD) must carry the session's CSRF token (``X-CSRF-Token``): without
    it the request is ``Refused`` (403)."""
    session_id = request.cookies.get(SESSION_COOKIE)
    sessions = _sessions(request)
    if not session_id or sessions is None:
        return None
    session = sessions.get(session_id)
    if session is None:
        return None
    if request.method not in _SAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(sent.encode(), session.csrf.encode()):
            raise Refused(
                403,
                "csrf",
                "A CSRF token is needed",
                f"{request.method} {request.url.path} with a session cookie needs the session's "
                "CSRF token in the X-CSRF-Token header",
            )
    return session.token


class _Login(msgspec.Struct, forbid_unknown_fields=True):
    key: str


class SessionInfo(msgspec.Struct, kw_only=True):
    """Whose session this is, and its CSRF token."""

    key_id: str
    tenant_id: str | None
    admin: bool
    csrf: str
    logged_in: bool = True


def _cookie(request: Request[Any, Any, Any], value: str, max_age: int) -> Cookie:
    return Cookie(
        key=SESSION_COOKIE,
        value=value,
        path="/",
        max_age=max_age,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


@post("/ui/login", status_code=200)
async def login(request: Request[Any, Any, Any]) -> Response[bytes]:
    """Trade an API key (``{"key": "nsw_..."}``, JSON) for a session cookie and a CSRF token."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/json":
        raise ValidationError('the login body is JSON: {"key": "nsw_..."}', path="$")
    try:
        body = msgspec.json.decode(await request.body(), type=_Login)
    except msgspec.DecodeError as exc:
        raise ValidationError(f'the login body is {{"key": "nsw_..."}}: {exc}', path="$") from None
    service = _service(request)
    sessions = _sessions(request)
    key = service.keys.authenticate(body.key.strip())
    if key is None or sessions is None:
        raise Refused(
            401, "unauthorized", "The API key is refused", "the API key is unknown or revoked"
        )
    service.keys.charge(key)
    session_id, csrf = sessions.open(body.key.strip())
    info = SessionInfo(key_id=key.id, tenant_id=key.tenant_id, admin=key.admin, csrf=csrf)
    response = _send(_answer(info))
    response.cookies.append(_cookie(request, session_id, int(sessions.ttl_s)))
    response.headers["Cache-Control"] = "no-store"
    return response


@get("/ui/session")
async def session_info(request: Request[Any, Any, Any]) -> Response[bytes]:
    """The session's owner and CSRF token (a page reloaded keeps its session), or
    ``{"logged_in": false}``."""
    sessions = _sessions(request)
    session_id = request.cookies.get(SESSION_COOKIE)
    session = None if sessions is None or not session_id else sessions.get(session_id)
    key = None if session is None else _service(request).keys.authenticate(session.token)
    if session is None or key is None:  # (a 200, so a page's first look logs no error)
        return _send(_answer({"logged_in": False}))
    info = SessionInfo(key_id=key.id, tenant_id=key.tenant_id, admin=key.admin, csrf=session.csrf)
    response = _send(_answer(info))
    response.headers["Cache-Control"] = "no-store"
    return response


@post("/ui/logout", status_code=200)
async def logout(request: Request[Any, Any, Any]) -> Response[bytes]:
    """End the session (its CSRF token is needed) and clear the cookie."""
    sessions = _sessions(request)
    session_id = request.cookies.get(SESSION_COOKIE)
    if sessions is not None and session_id:
        session_token(request)  # the CSRF check
        sessions.close(session_id)
    response = _send(_answer({"logged_out": True}))
    response.cookies.append(_cookie(request, "", 0))
    return response
