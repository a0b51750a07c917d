"""``FakeModal``: a stand-in for the ``modal`` module, for tests of the Modal backend where
Modal's cloud cannot be reached.

It offers the part of ``modal``'s interface the backend uses, with the real signatures (a test,
tests/contract/test_modal_fake.py, compares them with the installed package's):
``Function.from_name``, ``Function.hydrate``, ``Function.with_options``, ``Function.spawn``,
``FunctionCall.get`` with a timeout, ``FunctionCall.cancel``, ``FunctionCall.from_id``,
``FunctionCall.object_id``, each async one with its ``.aio`` twin; and ``exception``, which is
Modal's own ``modal.exception`` module (the ``modal`` extra). Like Modal, it:

- raises ``modal.exception.TimeoutError`` from ``get(timeout=...)`` when no output came in time
  (the call goes on), and ``FunctionTimeoutError`` when the call ran past its
  ``with_options(timeout=...)``;
- raises a remote exception as its own type (unpickled, as Modal deserializes it) with the
  remote traceback as its ``__traceback__``;
- raises ``NotFoundError`` for an app, function or call it does not know.

"Deployed functions" are Python callables (sync ones run in a thread) run as tasks of the loop
that spawns them; each is called with the arguments given to ``spawn``. ``disconnect()`` and
``reconnect()`` make every call fail with ``modal.exception.ConnectionError`` meanwhile (the
calls themselves go on running), ``forget(call_id)`` makes a call unknown, ``expire(call_id)``
its output expired (``OutputExpiredError``).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import itertools
import pickle
import time
from collections.abc import Callable
from typing import Any, ClassVar

__all__ = ["FakeModal", "FakeSpawn"]


class _Aio:
    """A method with an ``.aio`` twin, like Modal's (synchronicity's) methods: the blocking form
    is not offered here (a test runs on a loop), only ``.aio``."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self._fn = fn
        self.__signature__ = inspect.signature(fn)

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    def __get__(self, instance: Any, owner: type) -> Any:
        if instance is None:
            return self
        bound = self._fn.__get__(instance, owner)

        def blocking(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError(f"FakeModal: use {self._name}.aio(...) from a running loop")

        blocking.aio = bound  # type: ignore[attr-defined]
        return blocking

    @property
    def aio(self) -> Callable[..., Any]:
        """The unbound async form (for signature checks)."""
        return self._fn


class FakeSpawn:
    """One ``spawn``: the function, its ``with_options`` options, its arguments, its call id."""

    def __init__(
        self, app: str, name: str, options: dict[str, Any], args: tuple[Any, ...], call_id: str
    ) -> None:
        self.app = app
        self.name = name
        self.options = options
        self.args = args
        self.call_id = call_id
        self.canceled = False
        self.started = time.monotonic()
        self.ended: float | None = None
        self.task: asyncio.Task[Any] | None = None


class FakeModal:
    """A stand-in for the ``modal`` module (see the module docstring).

    ``apps`` maps an app name to its functions (name -> callable); ``environment`` is the one
    environment it knows (None: any). ``spawns`` lists every spawn, in order.
    """

    def __init__(
        self,
        apps: dict[str, dict[str, Callable[..., Any]]] | None = None,
        *,
        environment: str | None = None,
    ) -> None:
        import modal.exception

        self.exception = modal.exception
        self.apps = {app: dict(functions) for app, functions in (apps or {}).items()}
        self.environment = environment
        self.spawns: list[FakeSpawn] = []
        self.cancels: list[str] = []
        self._calls: dict[str, FakeSpawn] = {}
        self._forgotten: set[str] = set()
        self._expired: set[str] = set()
        self._connected = True
        self._ids = itertools.count(1)
        self._changed: asyncio.Event | None = None
        self._spawned = asyncio.Event()
        fake = self
        self.Function = type("Function", (_Function,), {"_fake": fake})
        self.FunctionCall = type("FunctionCall", (_FunctionCall,), {"_fake": fake})

    # ---- what a test does to it ---------------------------------------------------------------

    def deploy(self, app: str, name: str, fn: Callable[..., Any]) -> None:
        """Add (or replace) a deployed function."""
        self.apps.setdefault(app, {})[name] = fn

    def disconnect(self) -> None:
        """Lose the connection: every call fails with ``ConnectionError`` until ``reconnect``."""
        self._connected = False
        self._wake()

    def reconnect(self) -> None:
        """Have the connection back."""
        self._connected = True
        self._wake()

    def forget(self, call_id: str) -> None:
        """Make a call unknown (as one Modal no longer has): its ``get`` raises NotFoundError."""
        self._forgotten.add(call_id)
        self._wake()

    async def wait_spawned(self, count: int = 1, *, timeout: float = 30.0) -> FakeSpawn:
        """Wait until ``count`` calls were spawned; the last of them."""

        async def spawned() -> None:
            while len(self.spawns) < count:
                self._spawned.clear()
                await self._spawned.wait()

        await asyncio.wait_for(spawned(), timeout)
        return self.spawns[count - 1]

    def expire(self, call_id: str) -> None:
        """Make a call's output expired (as Modal's, some time after a call ended): its ``get``
        raises OutputExpiredError."""
        self._expired.add(call_id)
        self._wake()

    def call(self, call_id: str) -> FakeSpawn:
        """The spawn of a call id."""
        return self._calls[call_id]

    # ---- inside ----------------------------------------------------------------------------

    def _wake(self) -> None:
        if self._changed is not None:
            self._changed.set()

    def _check_connection(self) -> None:
        if not self._connected:
            raise self.exception.ConnectionError("FakeModal: the connection to Modal is lost")

    def _lookup(self, app: str, name: str, environment: str | None) -> Callable[..., Any]:
        self._check_connection()
        if self.environment is not None and environment not in (None, self.environment):
            raise self.exception.NotFoundError(f"Environment '{environment}' not found")
        functions = self.apps.get(app)
        if functions is None:
            raise self.exception.NotFoundError(
                f"Lookup failed for Function '{name}' from the '{app}' app: App not found."
            )
        if name not in functions:
            raise self.exception.NotFoundError(
                f"Lookup failed for Function '{name}' from the '{app}' app: Function not found."
            )
        return functions[name]

    def _spawn(
        self, app: str, name: str, environment: str | None, options: dict[str, Any], args: Any
    ) -> FakeSpawn:
        fn = self._lookup(app, name, environment)
        call_id = f"fc-fake{next(self._ids):06d}"
        spawn = FakeSpawn(app, name, dict(options), tuple(args), call_id)
        self.spawns.append(spawn)
        self._spawned.set()
        self._calls[call_id] = spawn
        if self._changed is None:
            self._changed = asyncio.Event()
        spawn.task = asyncio.get_running_loop().create_task(self._run(spawn, fn))
        return spawn

    async def _run(self, spawn: FakeSpawn, fn: Callable[..., Any]) -> Any:
        try:
            if inspect.iscoroutinefunction(fn):
                work = fn(*spawn.args)
            else:
                work = asyncio.to_thread(fn, *spawn.args)
            limit = spawn.options.get("timeout")
            return await asyncio.wait_for(work, limit) if limit else await work
        finally:
            spawn.ended = time.monotonic()

    async def _get(self, call_id: str, timeout: float | None) -> Any:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self._check_connection()
            spawn = self._calls.get(call_id)
            if spawn is None or call_id in self._forgotten:
                raise self.exception.NotFoundError(f"Function call {call_id} not found")
            if call_id in self._expired:
                raise self.exception.OutputExpiredError()
            task = spawn.task
            assert task is not None
            assert self._changed is not None
            if task.done():
                return self._output(spawn, task)
            self._changed.clear()
            changed = asyncio.ensure_future(self._changed.wait())
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                await asyncio.wait(
                    {task, changed}, timeout=left, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                changed.cancel()
            if not task.done() and deadline is not None and time.monotonic() >= deadline:
                raise self.exception.TimeoutError()

    def _output(self, spawn: FakeSpawn, task: asyncio.Task[Any]) -> Any:
        if task.cancelled():
            raise self.exception.RemoteError(f"Function call {spawn.call_id} was cancelled")
        error = task.exception()
        if error is None:
            return task.result()
        if isinstance(error, TimeoutError):  # (wait_for: past with_options(timeout=...))
            raise self.exception.FunctionTimeoutError(
                f"Function call {spawn.call_id} timed out after {spawn.options['timeout']}s"
            )
        # Modal sends the exception pickled and raises the copy, its traceback the remote one.
        copy = pickle.loads(pickle.dumps(error))
        raise copy.with_traceback(error.__traceback__)

    async def _cancel(self, call_id: str) -> None:
        self._check_connection()
        self.cancels.append(call_id)
        spawn = self._calls.get(call_id)
        if spawn is not None and spawn.task is not None and not spawn.task.done():
            spawn.canceled = True
            spawn.task.cancel()
            with contextlib.suppress(BaseException):
                await spawn.task


class _Function:
    """``modal.Function`` (a deployed function, looked up by name)."""

    _fake: ClassVar[FakeModal]

    def __init__(self, app: str, name: str, environment: str | None, options: dict[str, Any]):
        self._app = app
        self._name = name
        self._environment = environment
        self._options = options

    @classmethod
    def from_name(
        cls,
        app_name: str,
        name: str,
        *,
        version: int | None = None,
        environment_name: str | None = None,
        client: Any | None = None,
    ) -> _Function:
        """Lazy, as Modal's: nothing is looked up until ``hydrate`` or ``spawn``."""
        return cls(app_name, name, environment_name, {})

    async def _hydrate(self, client: Any | None = None) -> _Function:
        self._fake._lookup(self._app, self._name, self._environment)
        return self

    hydrate = _Aio(_hydrate)

    def with_options(
        self,
        *,
        cpu: float | tuple[float, float] | None = None,
        memory: int | tuple[int, int] | None = None,
        gpu: str | None = None,
        env: dict[str, str | None] | None = None,
        secrets: Any | None = None,
        volumes: dict[Any, Any] = {},  # noqa: B006 - Modal's own signature
        retries: Any | None = None,
        max_containers: int | None = None,
        buffer_containers: int | None = None,
        scaledown_window: int | None = None,
        timeout: int | None = None,
        region: Any | None = None,
        cloud: str | None = None,
        routing_region: str | None = None,
    ) -> _Function:
        """A copy with these options (those given; as Modal, options are never unset)."""
        given = {
            "cpu": cpu,
            "memory": memory,
            "gpu": gpu,
            "env": env,
            "secrets": secrets,
            "retries": retries,
            "max_containers": max_containers,
            "buffer_containers": buffer_containers,
            "scaledown_window": scaledown_window,
            "timeout": timeout,
            "region": region,
            "cloud": cloud,
            "routing_region": routing_region,
        }
        options = {**self._options, **{k: v for k, v in given.items() if v is not None}}
        return type(self)(self._app, self._name, self._environment, options)

    async def _spawn(self, *args: Any, **kwargs: Any) -> _FunctionCall:
        if kwargs:
            raise TypeError("FakeModal passes positional arguments only")
        spawn = self._fake._spawn(self._app, self._name, self._environment, self._options, args)
        return self._fake.FunctionCall(spawn.call_id)  # type: ignore[no-any-return]

    spawn = _Aio(_spawn)


class _FunctionCall:
    """``modal.FunctionCall`` (a spawned call, by its id)."""

    _fake: ClassVar[FakeModal]

    def __init__(self, call_id: str) -> None:
        self._call_id = call_id

    @property
    def object_id(self) -> str:
        """The call's id (``fc-...``)."""
        return self._call_id

    async def _get(self, timeout: float | None = None, *, index: int = 0) -> Any:
        return await self._fake._get(self._call_id, timeout)

    get = _Aio(_get)

    async def _cancel(self, terminate_containers: bool = False) -> None:
        await self._fake._cancel(self._call_id)

    cancel = _Aio(_cancel)

    @classmethod
    def from_id(cls, function_call_id: str, client: Any | None = None) -> _FunctionCall:
        """Lazy, as Modal's: the id is checked by the first ``get``."""
        return cls(function_call_id)
