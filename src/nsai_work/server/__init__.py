"""The HTTP API of nsai-work (the ``[server]`` extra: Litestar on uvicorn).

- ``create_app(store, keys=..., scheduler=None, **options)``: the ASGI app, for any ASGI server;
- ``serve(app, host=..., port=...)``: run it on uvicorn until SIGTERM or SIGINT (what
  ``nsai-work server`` does), stopping gracefully: no new connections, requests in flight
  finish, then the scheduler stops (running jobs get ``stop_timeout_s``);
- ``Server(app)``: the same on a thread of its own, on port 0 by default (``server.url``), for
  tests, examples and embedding: ``with Server(app) as server: ...``;
- ``KeyRing``: the API keys (``nsai-work keys create|list|revoke``).

The routes, auth, errors and metrics are in docs/service.md.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from ._app import create_app
from ._keys import ApiKey, KeyRing

__all__ = ["ApiKey", "KeyRing", "Server", "create_app", "serve"]


def _config(app: Any, host: str, port: int, **options: Any) -> Any:
    import uvicorn

    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=options.pop("log_level", "warning"),
        lifespan="on",
        timeout_graceful_shutdown=options.pop("timeout_graceful_shutdown", 30),
        **options,
    )


def serve(app: Any, *, host: str = "127.0.0.1", port: int = 8080, **options: Any) -> None:
    """Serve ``app`` on uvicorn until SIGTERM or SIGINT, then shut down gracefully.
    ``options`` are uvicorn's (``log_level``, ``proxy_headers``, ``forwarded_allow_ips``...)."""
    import uvicorn

    uvicorn.Server(_config(app, host, port, **options)).run()


class Server:
    """``app`` served by uvicorn on a thread of its own: ``with Server(app) as server:``, then
    ``server.url`` (``http://127.0.0.1:<port>``). Port 0 (the default) takes a free port."""

    def __init__(self, app: Any, *, host: str = "127.0.0.1", port: int = 0, **options: Any) -> None:
        import uvicorn

        self.app = app
        self._server = uvicorn.Server(_config(app, host, port, **options))
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.url = ""

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> Server:
        """Start serving; returns once the server listens (or raises why it could not)."""
        ready = threading.Event()

        def run() -> None:
            try:
                asyncio.run(self._server.serve())
            except BaseException as exc:  # pragma: no cover - reported by start()
                self._error = exc
            finally:
                ready.set()

        self._thread = threading.Thread(target=run, name="nsai-work-server", daemon=True)
        self._thread.start()
        while not self._server.started and self._thread.is_alive():
            ready.wait(0.005)
        if not self._server.started:
            raise RuntimeError(f"the server did not start: {self._error!r}")
        host, port = self._server.servers[0].sockets[0].getsockname()[:2]
        self.url = f"http://{host}:{port}"
        return self

    def stop(self) -> None:
        """Shut down as on SIGTERM (graceful), and wait for it."""
        if self._thread is not None:
            self._server.should_exit = True
            self._thread.join()
            self._thread = None
