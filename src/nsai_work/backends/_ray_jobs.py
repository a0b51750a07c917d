"""Command jobs on Ray Jobs (``JobSubmissionClient``): submit, follow the logs, stop.

A command job's payload is ``{"entrypoint": "python train.py --epochs 3"}`` (a shell command
line) or ``{"argv": ["python", "train.py"]}``, with optional ``env`` (variables added to the
runtime environment) and ``runtime_env`` (Ray's, for this job). The Ray job's submission id is
``nsai-<job id>-<attempt>``; its metadata names the tenant, the job and the attempt, so Ray's
dashboard shows whose work it is. The driver asks for the job's resources (``entrypoint_num_cpus``
and so on) and is pinned to the node of its pool (``entrypoint_label_selector``).

Ray Jobs' client blocks, so its calls run in threads; the logs are followed with
``tail_job_logs`` (an async iterator over a websocket: no polling while the job runs), and the
last ``tail_bytes`` are kept. The status is polled briefly once the log stream ends, as Ray only
offers it that way.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
from typing import TYPE_CHECKING, Any, Final

from .._errors import ValidationError
from ._process_boundary import CommandFailedError
from ._ray_nodes import ray_resources

if TYPE_CHECKING:
    from .._context import JobContext
    from .._ir import Job

__all__ = ["RayJobs", "check_ray_command", "entrypoint_of"]

_KEYS: Final = ("entrypoint", "argv", "env", "runtime_env")
_TERMINAL: Final = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})
#: How long the status may lag the end of the log stream, and how long a stop may take.
_SETTLE_S: Final = 30.0
_STOP_WAIT_S: Final = 10.0


def check_ray_command(job: Job) -> None:
    """Raise ``ValidationError`` unless the payload is a command Ray Jobs can run."""
    payload = job.payload
    unknown = sorted(set(payload) - set(_KEYS))
    if unknown:
        raise ValidationError(
            f"a Ray command job's payload has entrypoint (or argv), env and runtime_env; found "
            f"unknown key(s) {unknown}",
            path=f"$.payload.{unknown[0]}",
        )
    entrypoint, argv = payload.get("entrypoint"), payload.get("argv")
    if (entrypoint is None) == (argv is None):
        raise ValidationError(
            'a Ray command job needs exactly one of payload["entrypoint"] (a command line such '
            'as "python train.py") and payload["argv"] (a non-empty list of strings)',
            path="$.payload.entrypoint",
        )
    if entrypoint is not None and (not isinstance(entrypoint, str) or not entrypoint.strip()):
        raise ValidationError(
            f"entrypoint is a non-empty command line, got {entrypoint!r}",
            path="$.payload.entrypoint",
        )
    if argv is not None and (
        not isinstance(argv, list) or not argv or not all(isinstance(a, str) and a for a in argv)
    ):
        raise ValidationError(
            f"argv is a non-empty list of non-empty strings, got {argv!r}", path="$.payload.argv"
        )
    env = payload.get("env")
    if env is not None and (
        not isinstance(env, dict)
        or not all(isinstance(k, str) and k and isinstance(v, str) for k, v in env.items())
    ):
        raise ValidationError("env maps variable names to string values", path="$.payload.env")
    runtime_env = payload.get("runtime_env")
    if runtime_env is not None and not isinstance(runtime_env, dict):
        raise ValidationError(
            f"runtime_env is an object (Ray's runtime environment), got "
            f"{type(runtime_env).__name__}",
            path="$.payload.runtime_env",
        )


def entrypoint_of(job: Job) -> str:
    """The command line of a (valid) command job."""
    entrypoint = job.payload.get("entrypoint")
    return entrypoint if isinstance(entrypoint, str) else shlex.join(job.payload["argv"])


class RayJobs:
    """Runs command jobs through the Jobs API at ``address`` (the dashboard's)."""

    def __init__(self, address: str, *, tail_bytes: int, runtime_env: dict[str, Any] | None):
        self.address = address
        self.tail_bytes = tail_bytes
        self.runtime_env = runtime_env
        self._client: Any = None

    async def client(self) -> Any:
        """The Jobs API client, made on first use (its constructor calls the dashboard)."""
        if self._client is None:
            from ray.job_submission import JobSubmissionClient

            self._client = await asyncio.to_thread(JobSubmissionClient, self.address)
        return self._client

    def submission_id(self, job: Job) -> str:
        """The Ray submission id of a job's current attempt."""
        return f"nsai-{job.id}-{job.attempt}"

    async def run(self, job: Job, ctx: JobContext, node_id: str | None) -> dict[str, Any]:
        """Submit the command, follow it to its end; the result, or raise
        ``CommandFailedError`` with the tail of its logs. Cancelled: the Ray job is stopped
        (and waited for, briefly) before the cancellation goes on."""
        client = await self.client()
        submission_id = self.submission_id(job)
        runtime_env = dict(job.payload.get("runtime_env") or self.runtime_env or {})
        env = job.payload.get("env")
        if env:
            runtime_env["env_vars"] = {**runtime_env.get("env_vars", {}), **env}
        options = {f"entrypoint_{k}": v for k, v in ray_resources(job.resources).items()}
        options["entrypoint_num_gpus"] = options.pop("entrypoint_num_gpus", None)
        accelerator = options.pop("entrypoint_accelerator_type", None)
        resources = dict(options.pop("entrypoint_resources", None) or {})
        if accelerator is not None:
            resources[f"accelerator_type:{accelerator}"] = 0.001
        ctx.set_handle(f"job:{submission_id}")
        try:
            await asyncio.to_thread(
                client.submit_job,
                entrypoint=entrypoint_of(job),
                submission_id=submission_id,
                runtime_env=runtime_env or None,
                metadata={
                    "nsai.tenant_id": job.tenant_id,
                    "nsai.job_id": job.id,
                    "nsai.attempt": str(job.attempt),
                    "nsai.kind": job.kind,
                },
                entrypoint_resources=resources or None,
                entrypoint_label_selector={"ray.io/node-id": node_id} if node_id else None,
                **{k: v for k, v in options.items() if v is not None},
            )
            tail = await self._follow(client, submission_id)
            info = await self._settled(client, submission_id)
        except asyncio.CancelledError:
            await asyncio.shield(self.stop(submission_id))
            raise
        status = str(getattr(info.status, "value", info.status))
        if status == "SUCCEEDED":
            return {
                "status": status,
                "submission_id": submission_id,
                "driver_exit_code": info.driver_exit_code,
                "logs_tail": tail,
            }
        kept = len(tail.encode())
        raise CommandFailedError(
            f"Ray job {submission_id} ended {status}: {info.message}\n"
            f"--- logs (last {kept} bytes) ---\n{tail.rstrip()}",
            exit_code=info.driver_exit_code if info.driver_exit_code is not None else -1,
            stdout_tail=tail,
        )

    async def _follow(self, client: Any, submission_id: str) -> str:
        """The logs as they come, until the stream ends; the tail kept."""
        tail = ""
        try:
            async for chunk in client.tail_job_logs(submission_id):
                tail = (tail + chunk)[-self.tail_bytes :]
        except RuntimeError:  # the websocket closed abnormally: read the logs once at the end
            await self._settled(client, submission_id)
            logs = await asyncio.to_thread(client.get_job_logs, submission_id)
            tail = logs[-self.tail_bytes :]
        return tail

    async def _settled(self, client: Any, submission_id: str) -> Any:
        """The job's info once its status is terminal (it may lag the log stream a little)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _SETTLE_S
        delay = 0.05
        while True:
            info = await asyncio.to_thread(client.get_job_info, submission_id)
            if str(getattr(info.status, "value", info.status)) in _TERMINAL:
                return info
            if loop.time() > deadline:
                return info
            await asyncio.sleep(delay)
            delay = min(1.0, delay * 2)

    async def stop(self, submission_id: str) -> None:
        """Stop the Ray job (SIGTERM, then SIGKILL after Ray's wait) and wait for its end."""
        client = await self.client()
        with contextlib.suppress(Exception):  # (it may have ended, or never started)
            await asyncio.to_thread(client.stop_job, submission_id)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + _STOP_WAIT_S
            while loop.time() < deadline:
                info = await asyncio.to_thread(client.get_job_info, submission_id)
                if str(getattr(info.status, "value", info.status)) in _TERMINAL:
                    return
                await asyncio.sleep(0.1)
