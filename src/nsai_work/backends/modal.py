"""The Modal backend: jobs run as calls of functions deployed on Modal, with nsai-work's
priorities, quotas, fair share, budgets and retries on top (the ``modal`` extra:
``pip install nsai-work[modal]``).

- Which function: ``payload["function"]``, or ``functions[kind]``; the call gets the job's
  payload (without ``"function"``) as its one argument.
- Resources become ``with_options(gpu="A100:2", cpu=..., memory=..., timeout=..., retries=0)``
  (``_modal_prices.modal_options``): Modal's retries are off, the job's retry policy decides.
- A call is spawned with ``spawn.aio`` and awaited with ``FunctionCall.get.aio(timeout=...)``
  on the loop: no thread per running call. Its id is the attempt's handle (``call:fc-...``).
- A remote exception comes back as the job's error with its type, message and the remote
  traceback; a cancel or timeout calls ``FunctionCall.cancel``.
- A lost connection: the waiting run keeps its call id and, once Modal answers again, awaits the
  same call again (``FunctionCall.from_id``); a call Modal no longer knows fails the attempt
  with ``BackendLostError`` (``backend_lost: ...``), and the retry policy decides.
- Capacity: one pool, ``modal``, with ``max_concurrency`` slots and ``gpu_limits`` GPUs, priced
  with Modal's published per-second prices (``MODAL_PRICES``; ``prices=`` overrides them).
- Credentials: only Modal's own (``MODAL_TOKEN_ID``/``MODAL_TOKEN_SECRET`` or ``~/.modal.toml``,
  read by the ``modal`` client). This module never reads, logs or stores them, and takes their
  values out of any error text it makes.

``modal`` is imported only here, when the backend starts (or a stand-in is given).
"""

from __future__ import annotations

import asyncio
import contextlib
import linecache
import logging
import os
import traceback
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from .._errors import BackendError, ConfigurationError, NonRetryableError, ValidationError
from .._ir import Job, Pool, Prices
from ._modal_prices import MODAL_GPU_TYPES, MODAL_PRICES, PRICES_READ, check_gpu, modal_options
from ._process_boundary import remote_exception
from ._worker_wire import Err

if TYPE_CHECKING:
    from .._context import JobContext
    from ..engine import BackendEvents

__all__ = ["MODAL_PRICES", "PRICES_READ", "BackendLostError", "Modal", "ModalBackend"]

_log = logging.getLogger("nsai_work.backends.modal")
_FUNCTION_KEY: Final = "function"
_HANDLE_PREFIX: Final = "call:"
#: Modal's own timeout is the job's plus this: nsai-work's timer ends the run first.
_MODAL_TIMEOUT_GRACE_S: Final = 5.0
#: ``FunctionCall.get``'s timeout is the job's plus this (the engine's timer ends it first).
_GET_GRACE_S: Final = 2.0
#: The environment variables Modal reads its token from: never shown in an error.
_SECRET_VARIABLES: Final = ("MODAL_TOKEN_ID", "MODAL_TOKEN_SECRET")


class BackendLostError(BackendError):
    """A run's Modal call could not be found once the connection came back (``backend_lost``);
    retryable per the job's policy."""


BackendLostError.__module__ = "nsai_work.backends"


def _import_modal() -> Any:
    try:
        import modal
    except ImportError as exc:  # pragma: no cover - the extra is part of the test install
        raise ConfigurationError(
            "the Modal backend needs the modal client: pip install 'nsai-work[modal]'"
        ) from exc
    return modal


def scrub(text: str) -> str:
    """``text`` without the values of Modal's token variables (should a message carry one)."""
    for variable in _SECRET_VARIABLES:
        value = os.environ.get(variable)
        if value and len(value) >= 4:
            text = text.replace(value, "***")
    return text


class ModalBackend:
    """Run jobs as calls of functions deployed on Modal (see the module docstring and
    docs/modal.md).

    ``app``: the deployed app's name; ``environment``: its Modal environment (None: the
    profile's). ``functions`` maps a job kind to a function name of the app (a job may also name
    one in ``payload["function"]``). ``max_concurrency``: how many calls run at once (the pool's
    slots); ``gpu_limits``: GPUs per type that may be in use at once (None: 8 of each type Modal
    offers). ``prices`` replaces the price table; ``reattach_s``: how long a run whose
    connection was lost keeps trying to reach its call again. ``modal``: the ``modal`` module or
    a stand-in with its interface (``work.testing.FakeModal``); None imports ``modal``.
    """

    name = "modal"
    auto_select = True

    def __init__(
        self,
        app: str,
        *,
        environment: str | None = None,
        functions: Mapping[str, str] | None = None,
        max_concurrency: int = 64,
        gpu_limits: Mapping[str, int] | None = None,
        prices: Prices | None = None,
        pool: str = "modal",
        reattach_s: float = 300.0,
        modal: Any | None = None,
    ) -> None:
        if not isinstance(app, str) or not app:
            raise ConfigurationError(f"app is the name of a deployed Modal app, got {app!r}")
        if not isinstance(max_concurrency, int) or isinstance(max_concurrency, bool):
            raise ConfigurationError(f"max_concurrency is an int >= 1, got {max_concurrency!r}")
        if max_concurrency < 1:
            raise ConfigurationError(f"max_concurrency is an int >= 1, got {max_concurrency!r}")
        if not isinstance(reattach_s, int | float) or isinstance(reattach_s, bool):
            raise ConfigurationError(f"reattach_s is a number of seconds >= 0, got {reattach_s!r}")
        if reattach_s < 0:
            raise ConfigurationError(f"reattach_s is a number of seconds >= 0, got {reattach_s!r}")
        self.app = app
        self.environment = environment
        self.functions = dict(functions or {})
        for kind, function in self.functions.items():
            if not isinstance(function, str) or not function or "." in function:
                raise ConfigurationError(
                    f"functions[{kind!r}] is the name of a function of app {app!r} (no dots), "
                    f"got {function!r}"
                )
        limits = dict.fromkeys(MODAL_GPU_TYPES, 8) if gpu_limits is None else dict(gpu_limits)
        for gpu, count in limits.items():
            if gpu not in MODAL_GPU_TYPES:
                raise ConfigurationError(
                    f"gpu_limits names {gpu!r}, which Modal does not offer; it offers "
                    f"{list(MODAL_GPU_TYPES)}"
                )
            if not isinstance(count, int) or isinstance(count, bool) or count < 0:
                raise ConfigurationError(f"gpu_limits[{gpu!r}] is an int >= 0, got {count!r}")
        self.gpu_limits = {gpu: count for gpu, count in limits.items() if count}
        self.max_concurrency = max_concurrency
        self.prices = MODAL_PRICES if prices is None else prices
        self.pool_name = pool
        self.reattach_s = float(reattach_s)
        self._modal = modal
        self._events: BackendEvents | None = None
        self._found: dict[str, Any] = {}  # function name -> its (hydrated) Function
        self._missing: dict[str, str] = {}  # function name -> why the lookup failed
        self._calls: dict[str, Any] = {}  # job id -> its FunctionCall
        self._canceled: set[str] = set()  # job ids whose call was canceled already

    def __repr__(self) -> str:
        return f"ModalBackend(app={self.app!r}, environment={self.environment!r})"

    # ---- capacity and lifecycle ------------------------------------------------------------

    def pools(self) -> list[Pool]:
        """One elastic pool: ``max_concurrency`` slots, ``gpu_limits`` GPUs, Modal's prices."""
        return [
            Pool(
                name=self.pool_name,
                slots=self.max_concurrency,
                gpus=dict(self.gpu_limits),
                labels={"modal.com/app": self.app},
                prices=self.prices,
            )
        ]

    def bind(self, events: BackendEvents) -> None:
        """Keep the engine's channel (``set_limits`` tells it the pool's new size)."""
        self._events = events

    def set_limits(
        self, *, max_concurrency: int | None = None, gpu_limits: Mapping[str, int] | None = None
    ) -> None:
        """Change the pool's slots or GPU limits while the scheduler runs (from any thread):
        the engine is told through its pool-change channel (``BackendEvents.pools_changed``);
        runs already going keep their slots."""
        checked = ModalBackend(
            self.app,
            max_concurrency=self.max_concurrency if max_concurrency is None else max_concurrency,
            gpu_limits=self.gpu_limits if gpu_limits is None else gpu_limits,
            modal=self._modal,
        )
        self.max_concurrency, self.gpu_limits = checked.max_concurrency, checked.gpu_limits
        if self._events is not None:
            self._events.pools_changed(self.pools(), grace_s=None)

    async def start(self) -> None:
        """Look up the functions ``functions`` names (an unknown one is reported, and jobs that
        name it are refused at submit)."""
        modal = self._client()
        for name in sorted(set(self.functions.values())):
            try:
                await self._function(name)
            except NonRetryableError:
                pass  # (recorded: its jobs are refused at submit)
            except modal.exception.Error as exc:  # (unreachable now: looked up at first use)
                _log.warning("nsai-work: could not look up Modal functions: %s", scrub(str(exc)))
                return

    async def stop(self) -> None:
        """Forget the looked-up functions (calls still running were canceled by the engine)."""
        self._found.clear()

    def _client(self) -> Any:
        """The ``modal`` module (imported on first use) or the stand-in given."""
        if self._modal is None:
            self._modal = _import_modal()
        return self._modal

    async def _function(self, name: str) -> Any:
        """The deployed function ``name`` (looked up once); raises NonRetryableError for one the
        app does not have."""
        found = self._found.get(name)
        if found is not None:
            return found
        why = self._missing.get(name)
        if why is not None:
            raise NonRetryableError(why)
        modal = self._client()
        function = modal.Function.from_name(self.app, name, environment_name=self.environment)
        try:
            await function.hydrate.aio()
        except modal.exception.NotFoundError as exc:
            why = scrub(
                f"Modal app {self.app!r} (environment {self.environment or 'default'}) has no "
                f"deployed function {name!r}: {exc}; deploy it (modal deploy) or fix the name"
            )
            self._missing[name] = why
            _log.warning("nsai-work: %s", why)
            raise NonRetryableError(why) from None
        self._found[name] = function
        return function

    # ---- what runs here ----------------------------------------------------------------------

    def function_of(self, job: Job) -> str | None:
        """The function a job runs: ``payload["function"]``, else ``functions[kind]``."""
        named = job.payload.get(_FUNCTION_KEY) if isinstance(job.payload, dict) else None
        if isinstance(named, str) and named:
            return named
        return self.functions.get(job.kind)

    def supports(self, job: Job) -> bool:
        """Kinds ``functions`` maps, and jobs naming a function in ``payload["function"]``
        that are of kind ``"modal"`` or name this backend."""
        if job.kind in self.functions:
            return True
        named = job.payload.get(_FUNCTION_KEY) if isinstance(job.payload, dict) else None
        return (
            isinstance(named, str)
            and bool(named)
            and (job.kind == "modal" or job.constraints.backend == self.name)
        )

    def explain(self, job: Job) -> str:
        """Why this backend does not run ``job``."""
        return (
            f"modal runs the kinds {sorted(self.functions)} (functions=...) and jobs naming a "
            f'deployed function in payload["function"] (kind "modal", or '
            f'constraints.backend="modal"); kind {job.kind!r} is neither'
        )

    def validate(self, job: Job) -> None:
        """Refuse at submit a GPU request Modal cannot serve, a payload that is not an object,
        and a function the app is known not to have."""
        check_gpu(job)
        if not isinstance(job.payload, dict):
            raise ValidationError(
                f"a Modal job's payload is an object (the call's argument), got "
                f"{type(job.payload).__name__}",
                path="$.payload",
            )
        name = self.function_of(job)
        if name is None:
            return
        if not isinstance(name, str) or "." in name:
            raise ValidationError(
                f"payload.function is the name of a function of app {self.app!r} (no dots), got "
                f"{name!r}",
                path="$.payload.function",
            )
        why = self._missing.get(name)
        if why is not None:
            raise ValidationError(why, path="$.payload.function")

    async def execute(self, job: Job, ctx: JobContext) -> Any:
        """Spawn the call, record its id, and await its output (see the module docstring)."""
        name = self.function_of(job)
        if name is None:
            raise NonRetryableError(f"job {job.id} names no Modal function")
        modal = self._client()
        try:
            function = await self._function(name)
            options = modal_options(job, grace_s=_MODAL_TIMEOUT_GRACE_S)
            argument = {k: v for k, v in job.payload.items() if k != _FUNCTION_KEY}
            call = await function.with_options(**options).spawn.aio(argument)
        except modal.exception.Error as exc:
            raise BackendError(scrub(f"Modal could not start {self.app}.{name}: {exc}")) from None
        call_id = str(call.object_id)
        self._calls[job.id] = call
        try:
            ctx.set_handle(f"{_HANDLE_PREFIX}{call_id}")
            return await self._await(job, call, call_id)
        except asyncio.CancelledError:
            await asyncio.shield(self._cancel_call(job.id, call))
            raise
        finally:
            self._calls.pop(job.id, None)
            self._canceled.discard(job.id)

    async def _await(self, job: Job, call: Any, call_id: str) -> Any:
        """The call's output; through a lost connection, the same call awaited again."""
        modal = self._client()
        timeout_ms = job.resources.timeout_ms
        timeout = None if timeout_ms is None else timeout_ms / 1000.0 + _GET_GRACE_S
        lost_since: float | None = None
        delay = 0.05
        loop = asyncio.get_running_loop()
        while True:
            try:
                return await call.get.aio(timeout=timeout)
            except modal.exception.FunctionTimeoutError as exc:
                raise BackendError(
                    scrub(f"Modal ended call {call_id} at its timeout: {exc}")
                ) from None
            except modal.exception.OutputExpiredError as exc:  # (ended long ago: output gone)
                raise BackendLostError(
                    scrub(f"backend_lost: the output of Modal call {call_id} expired: {exc}")
                ) from None
            except modal.exception.TimeoutError:  # (no output within the job's timeout)
                raise BackendError(
                    f"Modal call {call_id} gave no output within the job's timeout"
                ) from None
            except modal.exception.NotFoundError as exc:
                raise BackendLostError(
                    scrub(f"backend_lost: Modal no longer knows call {call_id}: {exc}")
                ) from None
            except (modal.exception.ConnectionError, modal.exception.ServiceError, OSError) as exc:
                now = loop.time()
                if lost_since is None:
                    lost_since = now
                    _log.warning("nsai-work: Modal call %s: connection lost (%s)", call_id, exc)
                if now - lost_since > self.reattach_s:
                    raise BackendLostError(
                        scrub(
                            f"backend_lost: Modal call {call_id} could not be reached for "
                            f"{self.reattach_s:g} s: {exc}"
                        )
                    ) from None
                await asyncio.sleep(delay)
                delay = min(2.0, delay * 2)
                call = modal.FunctionCall.from_id(call_id)  # (re-attach by its id)
                self._calls[job.id] = call
            except modal.exception.Error as exc:  # Modal's own failure (not the function's)
                raise BackendError(scrub(f"Modal call {call_id} failed: {exc}")) from None
            except Exception as exc:  # the function raised: its type, message, traceback
                error = _remote(exc)
                raise error from error.__cause__  # (the remote traceback)

    async def _cancel_call(self, job_id: str, call: Any) -> None:
        """``FunctionCall.cancel`` once per run (best effort: a lost connection is logged)."""
        if job_id in self._canceled:
            return
        self._canceled.add(job_id)
        try:
            await call.cancel.aio()
        except Exception as exc:
            _log.warning("nsai-work: could not cancel Modal call: %s", scrub(str(exc)))

    async def cancel(self, job_id: str) -> None:
        """Cancel the job's running call (``FunctionCall.cancel``)."""
        call = self._calls.get(job_id)
        if call is not None:
            await self._cancel_call(job_id, call)

    async def cancel_orphan(self, job: Job, handle: str) -> None:
        """Cancel the call a dead scheduler left running (its handle ``call:fc-...``)."""
        kind, _, call_id = handle.partition(":")
        if kind + ":" != _HANDLE_PREFIX or not call_id:
            _log.warning("nsai-work: %r is not a Modal call handle", handle)
            return
        call = self._client().FunctionCall.from_id(call_id)
        try:
            await call.cancel.aio()
        except Exception as exc:
            _log.warning("nsai-work: could not cancel orphaned Modal call: %s", scrub(str(exc)))


def _remote(exc: BaseException) -> Exception:
    """The function's exception as the job's error: its type's name, message and the remote
    traceback (Modal sets it as the exception's ``__traceback__``, with the source lines in
    ``__line_cache__``)."""
    kind = type(exc)
    try:
        message = scrub(str(exc))
    except Exception:
        message = f"<{kind.__qualname__} whose str() raised>"
    error = remote_exception(
        Err(
            module=kind.__module__,
            qualname=kind.__qualname__,
            message=message,
            traceback=scrub(_remote_traceback(exc)),
            retryable=not isinstance(exc, NonRetryableError),
        )
    )
    return error


def _remote_traceback(exc: BaseException) -> str:
    """The remote traceback as text, with source lines from Modal's line cache if it has them."""
    cache: dict[tuple[str, int], str] = {}
    raw = getattr(exc, "__line_cache__", None)
    if isinstance(raw, dict):
        for key, line in raw.items():
            if isinstance(key, tuple) and len(key) == 2 and isinstance(line, str):
                with contextlib.suppress(TypeError, ValueError):
                    cache[(str(key[0]), int(key[1]))] = line
    frames = traceback.extract_tb(exc.__traceback__)
    lines = ["Traceback (most recent call last):\n"]
    for frame in frames:
        lineno = frame.lineno or 0
        lines.append(f'  File "{frame.filename}", line {lineno}, in {frame.name}\n')
        source = cache.get((frame.filename, lineno)) or linecache.getline(frame.filename, lineno)
        if source and source.strip():
            lines.append(f"    {source.strip()}\n")
    lines.extend(traceback.format_exception_only(exc))
    return "".join(lines)


#: The seed's name for it, like ``Mock``.
Modal = ModalBackend
