"""What users read in errors: ``JobError.type`` names a public path, never a private module,
and ``work.list()`` without a tenant names the public function and parameter."""

from __future__ import annotations

from collections.abc import Callable

import pytest

import nsai_work as work
from nsai_work._errors import public_type_name


class _Nested:
    class Inner(Exception):
        pass


def test_public_type_names() -> None:
    assert public_type_name(work.ValidationError) == "nsai_work.ValidationError"
    assert public_type_name(work.NonRetryableError) == "nsai_work.NonRetryableError"
    assert public_type_name(work.backends.MemoryLimitError) == (
        "nsai_work.backends.MemoryLimitError"
    )
    assert public_type_name(KeyError) == "KeyError"
    assert public_type_name(_Nested.Inner) == f"{__name__}._Nested.Inner"


def test_a_job_errors_type_never_shows_a_private_module(handlers: Callable[..., str]) -> None:
    kind = handlers(lambda job: "x" * 100)  # a result over max_result_bytes
    permanent = handlers(_fail_for_good)
    with work.SyncScheduler(max_result_bytes=10) as s:
        too_big = s.wait(s.submit(work.Job(kind=kind, tenant_id="t")).id, timeout=10)
        failed = s.wait(s.submit(work.Job(kind=permanent, tenant_id="t")).id, timeout=10)
    assert too_big.error is not None
    assert too_big.error.type == "nsai_work.ValidationError"
    assert failed.error is not None
    assert failed.error.type == "nsai_work.NonRetryableError"


def _fail_for_good(job: work.Job) -> None:
    raise work.NonRetryableError("no")


def test_list_without_a_tenant_says_which_argument_is_missing() -> None:
    work.start()
    try:
        with pytest.raises(work.ValidationError, match=r"^list needs tenant_id: ") as caught:
            work.list()
        assert caught.value.path == "$.tenant_id"
        assert work.as_tenant("acme").list().jobs == []
    finally:
        work.stop()
