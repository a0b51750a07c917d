"""The harness of ``check_store``: failing with a message, comparing jobs field by field, sample
jobs with every field set, and ``Check``, what each section works with."""

from __future__ import annotations

import datetime as _dt
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NoReturn

from msgspec.structs import replace

from .._ir import (
    Attempt,
    Audit,
    Backoff,
    Constraints,
    Job,
    JobError,
    Priority,
    Progress,
    Resources,
    RetryPolicy,
    Status,
)
from ..stores._protocol import WriteBatch

__all__ = [
    "T0",
    "TEXT",
    "Check",
    "CheckFailed",
    "Section",
    "fail",
    "finished",
    "plain_job",
    "rich_job",
    "same_jobs",
]

_UTC = _dt.UTC
#: A fixed instant with microseconds, for timestamps that must round-trip.
T0 = _dt.datetime(2026, 3, 4, 5, 6, 7, 891011, tzinfo=_UTC)
#: Text that trips naive encodings: accents, CJK, RTL, emoji, a combining mark, a zero-width
#: space, NUL, quotes, control characters and a backslash.
TEXT = 'héllo wörld, 你好, שלום, 🚀, e\u0301, \u200b, a\x00b, "quoted"\n\ttab \\ back'


class CheckFailed(AssertionError):
    """What ``check_store`` raises: ``AssertionError`` naming the section and the breach."""


def fail(message: str) -> NoReturn:
    """Raise the suite's ``AssertionError``."""
    raise CheckFailed(f"check_store: {message}")


def _differences(got: Any, want: Any) -> str:
    if isinstance(got, Job) and isinstance(want, Job):
        fields = [
            name
            for name in want.__struct_fields__
            if getattr(got, name, None) != getattr(want, name)
        ]
        return f"fields {fields} differ" if fields else "equal fields, different objects"
    if want is None:
        return f"the store holds a job where none should be: {got!r:.200}"
    if got is None:
        return "the store returned None (no such job)"
    return f"got {got!r:.200}, expected {want!r:.200}"


def same_jobs(
    section: str, got: Sequence[Job | None], want: Sequence[Job | None], what: str
) -> None:
    """Fail unless ``got`` equals ``want`` job by job (msgspec equality: every field)."""
    if len(got) != len(want):
        fail(
            f"{section}: {what} returned {len(got)} jobs, expected {len(want)} "
            f"(got ids {[j.id if j else None for j in got][:20]}, "
            f"expected {[j.id if j else None for j in want][:20]})"
        )
    for index, (one, other) in enumerate(zip(got, want, strict=True)):
        if one != other:
            which = other.id if other is not None else (one.id if one is not None else None)
            fail(
                f"{section}: {what}: job #{index} ({which!r}) does not round-trip: "
                f"{_differences(one, other)}"
            )


# ---- sample jobs ------------------------------------------------------------------------------


def plain_job(tenant_id: str, **fields: Any) -> Job:
    """A small job of ``tenant_id`` with a fresh id (``fields`` override)."""
    fields.setdefault("kind", "check.plain")
    fields.setdefault("id", f"job-{uuid.uuid4().hex}")
    return Job(tenant_id=tenant_id, **fields)


def rich_job(tenant_id: str, **fields: Any) -> Job:
    """A job with every field set, unicode in every free-text place and a non-UTC offset."""
    ist = _dt.timezone(_dt.timedelta(hours=5, minutes=30))
    error = JobError(
        type="ValueError", message=f"bad {TEXT}", traceback="Traceback:\n  x", attempt=1
    )
    values: dict[str, Any] = {
        "kind": "check.rich",
        "tenant_id": tenant_id,
        "namespace": "team-a.sub_1",
        "priority": Priority.REALTIME,
        "payload": {
            "text": TEXT,
            "nested": {"list": [1, 2.5, None, True, "x", -(2**53)], "empty": {}, "": "key"},
            "float": 0.1,
        },
        "resources": Resources(
            cpu=1.5,
            memory_mb=512,
            gpu="A100",
            gpu_count=2,
            timeout_ms=60_000,
            max_cost_usd=3.5,
            custom={"licenses": 2.0},
        ),
        "constraints": Constraints(
            retry_policy=RetryPolicy(
                max_attempts=5, backoff=Backoff.LINEAR, base_delay_ms=10, jitter=False
            ),
            concurrency_group="group-1",
            depends_on=("dep-1", "dép-2"),
            run_at=T0,
            deadline=T0 + _dt.timedelta(hours=1),
            backend="local",
            unique_key="unique-ü",
            pool_labels={"region": "eu-west", "tier": "ü"},
        ),
        "metadata": {"owner": "ünïcode", "trace": [1, {"a": None}]},
        "tags": ("a", "ü", "🚀"),
        "id": f"job-ü-🚀-{uuid.uuid4().hex}",
        "created_at": T0.astimezone(ist),
        "status": Status.RUNNING,
        "backend": "local",
        "pool": "local:async",
        "attempt": 2,
        "attempts": (
            Attempt(
                number=1,
                backend="local",
                pool="local:async",
                started_at=T0 + _dt.timedelta(seconds=1),
                finished_at=T0 + _dt.timedelta(seconds=2, microseconds=3),
                status=Status.FAILED,
                error=error,
                cost_usd=0.125,
            ),
            Attempt(
                number=2,
                backend="local",
                pool="local:async",
                started_at=T0 + _dt.timedelta(seconds=3),
            ),
        ),
        "result": {"partial": [1, "二"]},
        "error": error,
        "waiting_reason": "waiting for ü",
        "cancel_reason": None,
        "retry_of": "job-earlier",
        "submitted_at": T0,
        "queued_at": T0 + _dt.timedelta(microseconds=1),
        "started_at": T0 + _dt.timedelta(seconds=3),
        "next_attempt_at": T0 + _dt.timedelta(minutes=1),
        "progress": Progress(fraction=0.5, message="half ½"),
        "estimated_cost_usd": 1.25,
        "cost_usd": 0.125,
        "audit": (
            Audit(
                action="retry",
                by="key:0123456789abcdef",
                key_name="ops ü",
                at=T0 + _dt.timedelta(microseconds=7),
            ),
        ),
    }
    values.update(fields)
    return Job(**values)


def finished(job: Job, status: Status = Status.SUCCEEDED, at: _dt.datetime | None = None) -> Job:
    """The job's terminal snapshot."""
    return replace(job, status=status, finished_at=at or _dt.datetime.now(_UTC))


# ---- the harness ------------------------------------------------------------------------------


class Check:
    """What a section works with: the factory, fresh tenant ids, opened stores (closed when
    the section ends) and cleanup."""

    def __init__(
        self,
        factory: Callable[[], Any],
        durable: bool,
        damage: Callable[[str, str], None] | None,
        timeout_s: float,
    ) -> None:
        self.factory = factory
        self.durable = durable
        self.damage = damage
        self.timeout_s = timeout_s
        self.run = uuid.uuid4().hex[:8]
        self.section = "?"
        self._open: list[Any] = []

    def tenant(self, label: str) -> str:
        """A tenant id no other section or run uses."""
        return f"chk-{label}-{self.run}"

    async def opened(self, role: str = "scheduler") -> Any:
        """A new store from the factory, opened in ``role``."""
        store = self.factory()
        try:
            await store.open(role)
        except Exception as exc:
            fail(f"{self.section}: open({role!r}) of a new store failed: {exc!r}")
        self._open.append(store)
        return store

    def track(self, store: Any) -> Any:
        """Close ``store`` when the section ends (for a store the section opened itself)."""
        self._open.append(store)
        return store

    async def client_for(self, scheduler: Any) -> Any:
        """A client of the scheduler's data: another store object when the store is durable;
        the scheduler's own object when it is not (its data is not shared between objects)."""
        return await self.opened("client") if self.durable else scheduler

    async def reopened(self, store: Any, role: str = "scheduler") -> Any:
        """Close ``store`` and open a new object over the same data (durable stores only)."""
        await store.close()
        return await self.opened(role)

    async def close_all(self) -> None:
        """Close every store the section opened (twice is fine: close is idempotent)."""
        stores, self._open = self._open, []
        for store in reversed(stores):
            await store.close()

    async def clean(self, store: Any, jobs: Sequence[Job]) -> None:
        """Settle and delete ``jobs`` (their latest snapshots) so the next section starts
        from empty data."""
        keys = list({(job.tenant_id, job.id): None for job in jobs})
        current = await store.get_many(keys)
        live = [finished(job, Status.CANCELED) for job in current if job and not job.is_terminal]
        await store.write(WriteBatch(updates=live, deletes=keys))
        left = [key for key, job in zip(keys, await store.get_many(keys), strict=True) if job]
        if left:
            fail(f"{self.section}: write(deletes=...) left {left[:5]} stored")

    async def expect_error(
        self, error: type[Exception], call: Awaitable[Any], what: str, *names: str
    ) -> Exception:
        """Fail unless awaiting ``call`` raises ``error`` whose message names each of
        ``names``."""
        try:
            result = await call
        except error as exc:
            missing = [name for name in names if name not in str(exc)]
            if missing:
                fail(f"{self.section}: {what}: the {error.__name__} should name {missing}: {exc}")
            return exc
        except Exception as exc:
            fail(f"{self.section}: {what} should raise {error.__name__}, raised {exc!r}")
        fail(f"{self.section}: {what} should raise {error.__name__}, returned {result!r:.200}")


Section = Callable[[Check], Awaitable[None]]
