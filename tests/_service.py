"""Helpers of the service's tests: a real server (uvicorn on 127.0.0.1, an ephemeral port, on a
thread of its own) with API keys for an admin and two tenants, and raw requests to it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, NamedTuple

import httpx

from nsai_work.server import KeyRing, Server, create_app


class Running(NamedTuple):
    """A running server, its keys, and a raw HTTP client for it."""

    url: str
    keys: KeyRing
    admin: str
    acme: str
    globex: str
    http: httpx.Client
    app: Any

    def call(self, method: str, path: str, key: str | None, **kwargs: Any) -> httpx.Response:
        """A request with ``key`` (None: no key)."""
        headers = dict(kwargs.pop("headers", {}))
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        return self.http.request(method, path, headers=headers, **kwargs)


@contextlib.contextmanager
def running_server(**options: Any) -> Iterator[Running]:
    """A server of ``create_app(keys=..., **options)`` (default: the memory store, the
    scheduler in the server), and keys: admin, acme's and globex's."""
    keys = KeyRing()
    _, admin = keys.create(admin=True, name="ops")
    _, acme = keys.create(tenant_id="acme")
    _, globex = keys.create(tenant_id="globex")
    app = create_app(keys=keys, **options)
    with Server(app) as server, httpx.Client(base_url=server.url, timeout=30) as http:
        yield Running(server.url, keys, admin, acme, globex, http, app)
