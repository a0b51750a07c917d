"""``work.testing.check_backend`` over the process backend: handler jobs and command jobs, each
with a job that succeeds, one that fails and one that hangs until it is killed; also with jobs
that get their worker replaced every time."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import pytest

import nsai_work as work
from nsai_work.backends import ProcessBackend
from nsai_work.testing import check_backend

from ..integration import _process_handlers as h

TENANT = "contract"
TIMEOUT_S = 20.0

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the process backend is tested on Linux"
)


def job(kind: str, **fields: Any) -> work.Job:
    return work.Job(kind=kind, tenant_id=TENANT, **fields)


def test_process_backend_with_handlers(handlers: Callable[..., str]) -> None:
    check_backend(
        lambda: ProcessBackend(workers=2),
        job=job(handlers(h.echo), payload={"x": 1}),
        failing_job=job(handlers(h.fail), payload={"value": 2}),
        hanging_job=job(handlers(h.spin)),
        timeout_s=TIMEOUT_S,
    )


def test_process_backend_with_async_handlers(handlers: Callable[..., str]) -> None:
    check_backend(
        lambda: ProcessBackend(workers=1),
        job=job(handlers(h.echo_async)),
        failing_job=job(handlers(h.fail_permanently)),
        hanging_job=job(handlers(h.spin)),
        timeout_s=TIMEOUT_S,
    )


def test_process_backend_whose_workers_are_replaced_after_every_job(
    handlers: Callable[..., str],
) -> None:
    # Every job leaves a thread running, so its worker is replaced once it has ended: results,
    # failures, cancel and timeouts must keep their contract on that path too.
    check_backend(
        lambda: ProcessBackend(workers=1),
        job=job(handlers(h.leave_a_thread)),
        failing_job=job(handlers(h.fail), payload={"value": 3}),
        hanging_job=job(handlers(h.spin)),
        timeout_s=TIMEOUT_S,
    )


def test_process_backend_with_commands() -> None:
    check_backend(
        lambda: ProcessBackend(workers=2),
        job=job("command", payload={"argv": [sys.executable, "-c", "print('ok')"]}),
        failing_job=job("command", payload={"argv": ["sh", "-c", "exit 2"]}),
        hanging_job=job("command", payload={"argv": ["sleep", "600"]}),
        timeout_s=TIMEOUT_S,
    )


def test_a_process_backend_under_another_name(handlers: Callable[..., str]) -> None:
    check_backend(
        lambda: ProcessBackend(workers=1, name="sandbox", kinds=None),
        job=job(handlers(h.echo)),
        timeout_s=TIMEOUT_S,
    )
