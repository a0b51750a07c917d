"""The Modal backend's contracts: ``work.testing.check_backend`` passes on it (over the fake,
and over a real account in live runs), and ``FakeModal`` offers the installed ``modal``
package's own signatures, so the fake cannot drift from the library."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import modal
import pytest

import nsai_work as work
from nsai_work.backends import ModalBackend
from nsai_work.testing import FakeModal, check_backend
from tests._modal import APP, CLIENTS, ENVIRONMENT, client


def _job(function: str) -> work.Job:
    return work.Job(kind="modal", tenant_id="contract", payload={"function": function, "a": 1})


@pytest.mark.parametrize("kind", CLIENTS)
def test_check_backend_passes_on_the_modal_backend(kind: str) -> None:
    module = client(kind)
    fresh = isinstance(module, FakeModal)

    def factory() -> ModalBackend:
        stand_in = client(kind) if fresh else module
        return ModalBackend(APP, environment=ENVIRONMENT, modal=stand_in)

    check_backend(
        factory,
        job=_job("echo"),
        failing_job=_job("fail"),
        hanging_job=_job("hang"),
        timeout_s=60.0 if fresh else 300.0,
    )


def _shape(fn: Callable[..., Any]) -> list[tuple[str, Any, Any]]:
    """A signature's parameters (name, kind, default), without ``self``/``cls``."""
    parameters = list(inspect.signature(fn).parameters.values())
    if parameters and parameters[0].name in ("self", "cls"):
        parameters = parameters[1:]
    return [(p.name, p.kind, p.default) for p in parameters]


def _pairs() -> list[tuple[str, Any, Any]]:
    fake = FakeModal()
    return [
        ("Function.from_name", modal.Function.from_name, fake.Function.from_name),
        ("Function.with_options", modal.Function.with_options, fake.Function.with_options),
        ("Function.hydrate.aio", modal.Function.hydrate.aio, fake.Function.hydrate.aio),
        ("Function.spawn.aio", modal.Function.spawn.aio, fake.Function.spawn.aio),
        ("FunctionCall.get.aio", modal.FunctionCall.get.aio, fake.FunctionCall.get.aio),
        ("FunctionCall.cancel.aio", modal.FunctionCall.cancel.aio, fake.FunctionCall.cancel.aio),
        ("FunctionCall.from_id", modal.FunctionCall.from_id, fake.FunctionCall.from_id),
    ]


@pytest.mark.parametrize(("name", "real", "fake"), _pairs(), ids=[p[0] for p in _pairs()])
def test_the_fake_has_the_real_modal_signatures(name: str, real: Any, fake: Any) -> None:
    assert _shape(fake) == _shape(real), name


def test_the_fake_uses_modals_own_exceptions_and_call_ids() -> None:
    fake = FakeModal()
    assert fake.exception is modal.exception
    assert isinstance(inspect.getattr_static(modal.FunctionCall, "object_id"), property)
    assert isinstance(inspect.getattr_static(fake.FunctionCall, "object_id"), property)
    assert issubclass(modal.exception.FunctionTimeoutError, modal.exception.TimeoutError)
    assert issubclass(modal.exception.OutputExpiredError, modal.exception.TimeoutError)
    assert modal.__version__.startswith("1.6.")
