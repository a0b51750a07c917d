"""``--serve``: the web dashboard of the demo's own scheduler, while the demo runs.

The demo runs the process-wide scheduler (``work.start``) on its loop thread; the HTTP server
(``nsai_work.server``, the ``[server]`` extra) is served on that same loop, over that same
scheduler (``create_app(scheduler=<Scheduler>)``), so the dashboard shows exactly what the
demo does. Keys are made for the run, in memory: an admin key, and one per demo tenant.
"""

from __future__ import annotations

import asyncio
import socket
import time
from concurrent.futures import Future
from typing import Any, TextIO

import nsai_work as work

__all__ = ["Served", "serve"]


class Served:
    """The dashboard being served: its URL and keys; ``stop()`` before the scheduler stops."""

    def __init__(self, server: Any, future: Future[Any], url: str, keys: dict[str, str]) -> None:
        self._server = server
        self._future = future
        self.url = url
        self.keys = keys

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving (open pages lose their stream)."""
        self._server.should_exit = True
        app = self._server.config.app
        app.state.service.hub.end_streams()
        try:
            self._future.result(timeout)
        except Exception:  # pragma: no cover - the demo goes on stopping
            self._future.cancel()


def serve(host: str, port: int, tenants: list[str], out: TextIO) -> Served | None:
    """Serve the dashboard of the running process-wide scheduler on ``host:port``; None (and
    why, on ``out``) when it cannot be (no ``[server]`` extra, the port taken)."""
    try:
        from nsai_work.server import KeyRing, create_app
        from nsai_work.server import _uvicorn as make_server
    except ImportError as error:
        out.write(f"--serve: the dashboard needs the [server] extra ({error}); not served.\n")
        return None
    try:  # (uvicorn exits the process when it cannot bind: find out first)
        with socket.create_server((host, port)):
            pass
    except OSError as error:
        out.write(f"--serve: the dashboard cannot listen on {host}:{port} ({error}); not served.\n")
        return None
    sync = work.default_scheduler()
    engine = sync.engine
    loop = sync._loop
    assert loop is not None
    ring = KeyRing()
    _, admin = ring.create(admin=True, name="demo")
    keys = {"admin": admin}
    for tenant in tenants:
        keys[tenant] = ring.create(tenant_id=tenant, name="demo")[1]
    app = create_app(keys=ring, scheduler=engine)
    server = make_server(app, host, port, timeout_graceful_shutdown=2)
    future = asyncio.run_coroutine_threadsafe(server.serve(), loop)
    deadline = time.monotonic() + 10
    while not server.started and not future.done() and time.monotonic() < deadline:
        time.sleep(0.01)
    if not server.started:
        server.should_exit = True
        out.write(f"--serve: the dashboard could not listen on {host}:{port}; not served.\n")
        return None
    bound_host, bound_port = server.servers[0].sockets[0].getsockname()[:2]
    url = f"http://{bound_host}:{bound_port}/"
    out.write(f"Dashboard: {url}  (log in with a key below; served while the demo runs)\n")
    for who, token in keys.items():
        out.write(f"  {who:<10} {token}\n")
    out.flush()
    return Served(server, future, url, keys)
