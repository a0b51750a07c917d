"""What crosses the process boundary of the process backend, both ways.

Into a worker: a handler known by ``module:qualname`` (``handler_reference`` says whether a
worker can import it, and if not why), a command's ``argv``/``env``/``cwd`` (``check_command``),
the Job as JSON. Back: a JSON result, a command's exit and output tails (``command_result``), an
exception as its type's name, message and traceback (``remote_exception`` raises it again here
with the same type name), or the news that the worker died (``WorkerCrashedError``) or went over
its memory (``MemoryLimitError``): ``lost_run_error`` makes those for a run whose worker is
gone.
"""

from __future__ import annotations

import builtins
import math
import signal
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from .._errors import BackendError, NonRetryableError, ValidationError, public_type_name
from ._process_worker import Exited, MemoryKilled
from ._worker_wire import CommandDone, Err, MemoryExceeded, RunCommand, RunHandler

if TYPE_CHECKING:
    from .._ir import Job

__all__ = [
    "COMMAND_KIND",
    "CommandFailedError",
    "MemoryLimitError",
    "RemoteError",
    "RemoteTraceback",
    "WorkerCrashedError",
    "check_command",
    "command_result",
    "exit_text",
    "handler_reference",
    "lost_run_error",
    "remote_exception",
]

#: The kind of jobs that run an executable (payload ``argv``, ``env``, ``cwd``).
COMMAND_KIND: Final = "command"
_COMMAND_KEYS: Final = ("argv", "env", "cwd")


class RemoteError(Exception):
    """An exception a handler raised in a worker process, raised again in the scheduler.

    Its class is made per original type: same ``__module__`` and ``__qualname__`` (so the job's
    ``error.type`` is the original's qualified name), a subclass of the original when that is a
    builtin exception (``except ValueError`` works) and of ``work.NonRetryableError`` when the
    original was one. ``str()`` is the original message; ``remote_traceback`` the worker's
    traceback (also shown as the ``__cause__``).
    """

    def __init__(self, message: str, *, type_name: str = "", remote_traceback: str = "") -> None:
        BaseException.__init__(self, message)
        self.message = message
        self.type_name = type_name
        self.remote_traceback = remote_traceback

    def __str__(self) -> str:
        return self.message


class RemoteTraceback(Exception):
    """The traceback of an exception in a worker process, as text (the ``__cause__`` of a
    ``RemoteError``, like ``concurrent.futures``' process pool does)."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f'\n"""\n{self.text.rstrip()}\n"""'


class WorkerCrashedError(BackendError):
    """The worker process died while running the job (a signal, ``os._exit``); retryable."""


class MemoryLimitError(BackendError, NonRetryableError):
    """The job went over ``resources.memory_mb``. Not retried: the same job under the same limit
    would fail again; ask for more memory or use less."""


class CommandFailedError(BackendError):
    """A command job exited with a non-zero code or was killed by a signal; retryable per the
    job's policy. ``exit_code`` (None if killed), ``signal``, and the output tails."""

    def __init__(
        self,
        message: str,
        *,
        exit_code: int | None = None,
        signal: int | None = None,
        stdout_tail: str = "",
        stderr_tail: str = "",
    ) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.signal = signal
        self.stdout_tail = stdout_tail
        self.stderr_tail = stderr_tail


# Shown (in a job's error.type, in tracebacks) where users import them from.
for _public in (
    RemoteError,
    RemoteTraceback,
    WorkerCrashedError,
    MemoryLimitError,
    CommandFailedError,
):
    _public.__module__ = "nsai_work.backends"

_REMOTE_CLASSES: dict[tuple[str, str, bool], type[RemoteError]] = {}
_MAX_REMOTE_CLASSES: Final = 1024


def remote_exception(error: Err) -> RemoteError:
    """The exception to raise in the scheduler for an ``Err`` reply of a worker."""
    cls = _remote_class(error.module, error.qualname, error.retryable)
    local = getattr(sys.modules.get(error.module), error.qualname, None)
    if isinstance(local, type):  # the same type is loaded here: name it by its public path
        name = public_type_name(local)
    elif error.module in ("builtins", "__main__"):
        name = error.qualname
    else:
        name = f"{error.module}.{error.qualname}"
    exc = cls(error.message, type_name=name, remote_traceback=error.traceback)
    exc.__cause__ = RemoteTraceback(error.traceback)
    return exc


def _remote_class(module: str, qualname: str, retryable: bool) -> type[RemoteError]:
    key = (module, qualname, retryable)
    cls = _REMOTE_CLASSES.get(key)
    if cls is not None:
        return cls
    bases: list[type] = [RemoteError]
    if not retryable:
        bases.append(NonRetryableError)
    original = getattr(builtins, qualname, None) if module == "builtins" else None
    if (
        isinstance(original, type)
        and issubclass(original, Exception)
        and original is not Exception
        and not issubclass(original, UnicodeError)  # their str() and fields need real arguments
    ):
        bases.append(original)
    namespace = {"__module__": module, "__qualname__": qualname, "__doc__": RemoteError.__doc__}
    name = qualname.rpartition(".")[2] or "RemoteError"
    try:
        cls = type(name, tuple(bases), namespace)
    except TypeError:  # an incompatible builtin layout: keep the name, drop the base
        cls = type(name, tuple(b for b in bases if b is not original), namespace)
    if len(_REMOTE_CLASSES) < _MAX_REMOTE_CLASSES:
        _REMOTE_CLASSES[key] = cls
    return cls


def _signal_text(number: int) -> str:
    """``SIGSEGV (Segmentation fault)``."""
    try:
        name = signal.Signals(number).name
    except ValueError:
        name = f"signal {number}"
    description = signal.strsignal(number) or ""
    return f"{name} ({description})" if description else name


def exit_text(returncode: int) -> str:
    """How a process ended, from its return code (negative: the signal that killed it)."""
    if returncode < 0:
        return f"was killed by signal {_signal_text(-returncode)}"
    return f"exited with code {returncode}"


def lost_run_error(
    pid: int, job_id: str, request: RunHandler | RunCommand, reply: Any
) -> BackendError:
    """The error of a run whose worker is gone or must go (``pid``, running job ``job_id``): it
    went over its memory (``MemoryExceeded`` from the worker, ``MemoryKilled`` by the memory
    watch: ``MemoryLimitError``) or died (``Exited``: ``WorkerCrashedError``). The worker's
    traceback or crash report, when there is one, is its ``__cause__``."""
    kind = type(reply)
    if kind is MemoryExceeded:
        refused = f"MemoryError: {reply.message}" if reply.message else "MemoryError"
        error = MemoryLimitError(
            f"memory limit exceeded: an allocation of more than {_under(reply.left_mb)} MB "
            f"was refused ({refused}) with {reply.used_mb:.1f} MB of the job's "
            f"{reply.limit_mb} MB in use (resources.memory_mb); ask for more memory_mb or "
            f"use less"
        )
        error.__cause__ = RemoteTraceback(reply.traceback)
        return error
    if kind is MemoryKilled:
        return MemoryLimitError(
            f"memory limit exceeded: used {_over(reply.used_mb)} MB of {reply.limit_mb} MB - "
            f"the resident memory of the job's processes went over resources.memory_mb and "
            f"they were killed; ask for more memory_mb or use less"
        )
    assert isinstance(reply, Exited)
    what = (
        f"the command {request.argv!r}"
        if isinstance(request, RunCommand)
        else f"the handler {request.ref}"
    )
    hint = ""
    if reply.kill_reason == "protocol":
        hint = " - it wrote something unreadable on its reply pipe and was killed"
    elif reply.kill_reason is not None:
        hint = f" - it was killed by the backend ({reply.kill_reason})"
    elif reply.returncode == -signal.SIGKILL:
        hint = (
            " - SIGKILL came from outside the scheduler (the kernel's out-of-memory killer, "
            "or someone killed it)"
        )
    crashed = WorkerCrashedError(
        f"the worker process (pid {pid}) {exit_text(reply.returncode)} while running "
        f"{what} of job {job_id}{hint}; the pool replaced it, other jobs are not affected"
    )
    if reply.crash_report:
        crashed.__cause__ = RemoteTraceback(reply.crash_report)
    return crashed


def _over(used_mb: float) -> str:
    """Memory in use past a limit, to 0.1 MB rounded up (so it never reads as the limit)."""
    return f"{math.ceil(used_mb * 10) / 10:.1f}"


def _under(left_mb: float) -> str:
    """Memory left under a limit, to 0.1 MB rounded down (so "more than" stays true)."""
    return f"{math.floor(left_mb * 10) / 10:.1f}"


# ---- what may cross the process boundary ------------------------------------------------------

_MISSING: Final = object()


def handler_reference(fn: Callable[..., Any]) -> tuple[str | None, str | None]:
    """``(module:qualname, None)`` if a worker process can import ``fn`` by that name, else
    ``(None, why not)``."""
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str):
        return None, (
            f"{fn!r} has no __module__ and __qualname__ (a callable object or a partial?): "
            f"register a function defined with def at module level"
        )
    if qualname.endswith("<lambda>"):
        return None, "is a lambda: define it with def at module level"
    if "<locals>" in qualname:
        return None, (
            "is defined inside a function (a closure or local function), which another process "
            "cannot import: define it at module level and pass data through the job's payload"
        )
    if module == "__main__":
        return None, (
            "is defined in __main__ (the script being run), which a worker process cannot import "
            "without running the script again: move it into a module and import it from there"
        )
    loaded = sys.modules.get(module)
    if loaded is None or getattr(loaded, "__spec__", None) is None:
        return None, (
            f"belongs to module {module!r}, which cannot be imported by name (not imported from "
            f"a file on sys.path, or made at run time)"
        )
    target: Any = loaded
    for part in qualname.split("."):
        target = getattr(target, part, _MISSING)
        if target is _MISSING:
            return None, f"is not reachable as {module}:{qualname} (no such attribute)"
    try:
        same = target is fn or bool(target == fn)
    except Exception:
        same = False
    if not same:
        return None, (
            f"is not the object {module}:{qualname} names (was it redefined, or wrapped by a "
            f"decorator that does not use functools.wraps?)"
        )
    return f"{module}:{qualname}", None


def check_command(job: Job) -> None:
    """Raise ``ValidationError`` unless the payload is a runnable command: ``argv`` a non-empty
    list of strings, ``env`` an object of strings, ``cwd`` a string, and nothing else."""
    payload = job.payload
    unknown = sorted(set(payload) - set(_COMMAND_KEYS))
    if unknown:
        raise ValidationError(
            f"a command job's payload has argv, env and cwd; found unknown key(s) {unknown}",
            path=f"$.payload.{unknown[0]}",
        )
    argv = payload.get("argv")
    if not isinstance(argv, list) or not argv:
        raise ValidationError(
            f'a command job needs payload["argv"], a non-empty list of strings such as '
            f'["python", "train.py", "--epochs", "3"]; got {argv!r}',
            path="$.payload.argv",
        )
    for index, item in enumerate(argv):
        if not isinstance(item, str) or "\0" in item:
            raise ValidationError(
                f"each argument is a string without NUL characters; got {item!r}",
                path=f"$.payload.argv[{index}]",
            )
    if not argv[0]:
        raise ValidationError(
            "argv[0] names the program to run; got an empty string", path="$.payload.argv[0]"
        )
    env = payload.get("env")
    if env is not None:
        if not isinstance(env, dict):
            raise ValidationError(
                f"env maps variable names to string values; got {type(env).__name__}",
                path="$.payload.env",
            )
        for key, value in env.items():
            if not key or "=" in key or "\0" in key:
                raise ValidationError(
                    f"an environment variable name is non-empty, without '=' or NUL; got {key!r}",
                    path="$.payload.env",
                )
            if not isinstance(value, str) or "\0" in value:
                raise ValidationError(
                    f"environment values are strings without NUL characters; got {value!r} "
                    f"(write numbers as strings: {{'{key}': '{value}'}})",
                    path=f"$.payload.env.{key}",
                )
    cwd = payload.get("cwd")
    if cwd is not None and (not isinstance(cwd, str) or not cwd or "\0" in cwd):
        raise ValidationError(
            f"cwd is the directory to run the command in, a non-empty string; got {cwd!r}",
            path="$.payload.cwd",
        )


def command_result(request: RunCommand, done: CommandDone) -> dict[str, Any]:
    """The result of a command that exited 0, or raise ``CommandFailedError``."""
    if done.exit_code == 0:
        return {
            "exit_code": 0,
            "stdout_tail": done.stdout_tail,
            "stderr_tail": done.stderr_tail,
            "stdout_bytes": done.stdout_bytes,
            "stderr_bytes": done.stderr_bytes,
            "max_rss_mb": done.max_rss_mb,
        }
    if done.signal is not None:
        how = f"was killed by signal {_signal_text(done.signal)}"
    else:
        how = f"exited with code {done.exit_code}"
    sections = [f"command {request.argv!r} {how} (peak resident memory {done.max_rss_mb} MB)"]
    for name, tail, total in (
        ("stderr", done.stderr_tail, done.stderr_bytes),
        ("stdout", done.stdout_tail, done.stdout_bytes),
    ):
        if total:
            kept = min(total, request.tail_bytes)
            sections.append(f"--- {name} (last {kept} of {total} bytes) ---")
            sections.append(tail.rstrip("\n"))
    raise CommandFailedError(
        "\n".join(sections),
        exit_code=done.exit_code,
        signal=done.signal,
        stdout_tail=done.stdout_tail,
        stderr_tail=done.stderr_tail,
    )
