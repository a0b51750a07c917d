"""How the engine's changes reach the store: at once for the memory store, by group commit for
a durable one.

``GroupCommit`` keeps, per job, the latest snapshot written since the last commit (a job that
moved three times in a batch is written once), and one writer task commits them in one
transaction per batch. ``commit()`` waits for the commit that holds everything written so far:
a submit awaits it, so it returns only once its jobs are durable, and concurrent submitters
share one commit (while a commit is in flight the next batch gathers). Without a waiter, a
batch is committed ``flush_s`` after its first write. ``after_commit(callback)`` runs the
callback once everything written so far is committed: the engine tells waiters and telemetry
that a job finished only then.

When a commit fails the batch is kept (newer writes merge into it) and retried with backoff,
so nothing is lost while the database restarts; ``commit()`` raises ``StoreUnavailableError``
after ``timeout_s`` without a commit (the write stays queued). An insert refused as a
duplicate fails only the submit that made it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Final

from .._errors import ConflictError, StoreError, StoreUnavailableError
from .._ir import Job
from ..stores import JobKey, MemoryStore, Store, WriteBatch

__all__ = ["GroupCommit", "MemoryWrites", "Writes"]

_log = logging.getLogger("nsai_work.engine")
#: Backoff between retries of a failed commit: doubled from the first to the last.
_RETRY_FIRST_S: Final = 0.05
_RETRY_MAX_S: Final = 2.0


class _Pending:
    """What is written but not committed yet: new jobs and the latest snapshot of changed
    ones (by key, in the order first written), the core's state, deletes, and who waits."""

    __slots__ = ("callbacks", "deletes", "inserted", "jobs", "state", "waiters")

    def __init__(self) -> None:
        self.jobs: dict[JobKey, Job] = {}
        self.inserted: dict[JobKey, asyncio.Future[None] | None] = {}  # key -> its submit
        self.state: bytes | None = None
        self.deletes: list[JobKey] = []
        self.waiters: list[asyncio.Future[None]] = []
        self.callbacks: list[Callable[[], None]] = []

    def __bool__(self) -> bool:
        return bool(self.jobs or self.deletes or self.state is not None)

    def batch(self) -> WriteBatch:
        inserted = self.inserted
        return WriteBatch(
            inserts=[job for key, job in self.jobs.items() if key in inserted],
            updates=[job for key, job in self.jobs.items() if key not in inserted],
            state=self.state,
            deletes=list(self.deletes),
        )

    def absorb(self, newer: _Pending) -> None:
        """Merge writes made after this batch into it (this batch failed and is retried)."""
        for key, job in newer.jobs.items():
            self.jobs[key] = job
        self.inserted.update(newer.inserted)
        if newer.state is not None:
            self.state = newer.state
        self.deletes += newer.deletes
        self.waiters += newer.waiters
        self.callbacks += newer.callbacks


class MemoryWrites:
    """Writes to the memory store, applied at once: nothing to wait for, nothing to batch."""

    durable = False

    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        self.table = store.table
        self.failing = False

    def start(self) -> None:
        """Nothing to start."""

    def insert(self, job: Job) -> None:
        """Store a new job."""
        self.table.insert(job)

    def update(self, job: Job, now: float = 0.0) -> None:
        """Store a job's new snapshot (``now``, monotonic, starts a finished job's retention)."""
        self.table.put(job, now)

    def withdrawn(self, key: JobKey) -> bool:
        """Never: the memory store refuses nothing after admission."""
        return False

    def submitted(self, keys: Sequence[JobKey]) -> None:
        """Nothing to wait for: the jobs are stored."""

    async def wait_submitted(self, done: asyncio.Future[None] | None) -> None:
        """Nothing to wait for."""

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Everything is stored already: run it now."""
        callback()

    async def commit(self) -> None:
        """Everything is stored already."""

    async def close(self) -> None:
        """Nothing to flush."""


class GroupCommit:
    """Batches of writes to a durable store, one writer task, commits in order."""

    durable = True

    def __init__(self, store: Store, *, flush_s: float, timeout_s: float) -> None:
        self.store = store
        self.flush_s = flush_s
        self.timeout_s = timeout_s
        self._pending = _Pending()
        self._in_flight: _Pending | None = None  # the batch being committed
        self._wake = asyncio.Event()  # something is queued
        self._urgent = asyncio.Event()  # someone waits for a commit
        self._withdrawn: set[JobKey] = set()  # refused inserts: their later writes are dropped
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        #: Called with the keys of inserts the store refused as duplicates (the engine
        #: withdraws those jobs); set by the engine.
        self.on_conflict: Callable[[list[JobKey]], None] = lambda keys: None
        #: True while commits fail (the engine holds dispatch back meanwhile).
        self.failing = False
        #: Gives the engine's state (``EngineState`` bytes), committed with every batch.
        self.state_source: Callable[[], bytes] | None = None

    def start(self) -> None:
        """Start the writer task (on the running loop)."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="nsai-work-writer")

    # ---- writes (synchronous: they only queue) ---------------------------------------------

    def insert(self, job: Job) -> None:
        """Queue a new job (``submitted`` ties it to the submit that waits for it)."""
        key = (job.tenant_id, job.id)
        if self._withdrawn:  # a new job with a withdrawn key: the withdrawn one is over
            self._withdrawn.discard(key)
        self._pending.jobs[key] = job
        self._pending.inserted[key] = None
        self._wake.set()

    def submitted(self, keys: Sequence[JobKey]) -> asyncio.Future[None]:
        """A future done when the new jobs with these keys (queued by ``insert`` since the
        writer last took a batch) are committed, or failed with ``ConflictError`` when the
        store refused one of them (then none of them is written)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        pending = self._pending
        for key in keys:
            if key in pending.inserted:
                pending.inserted[key] = done
        pending.waiters.append(done)
        self._wake.set()
        self._urgent.set()
        return done

    def update(self, job: Job, now: float = 0.0) -> None:
        """Queue a job's new snapshot (it replaces any snapshot of it not committed yet)."""
        key = (job.tenant_id, job.id)
        if key in self._withdrawn:
            return
        self._pending.jobs[key] = job
        self._wake.set()

    def withdrawn(self, key: JobKey) -> bool:
        """Whether the job with this key is one whose insert the store refused (its key is
        another job's there): its writes are dropped, until a new job takes the key."""
        return key in self._withdrawn

    def state(self, blob: bytes) -> None:
        """Queue the core's exported state."""
        self._pending.state = blob
        self._wake.set()

    def delete(self, keys: Sequence[JobKey]) -> None:
        """Queue the removal of finished jobs."""
        self._pending.deletes += keys
        self._wake.set()

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once everything queued so far is committed."""
        last = self._last_batch()
        if last is None:
            callback()
        else:
            last.callbacks.append(callback)

    def _last_batch(self) -> _Pending | None:
        """The batch whose commit covers everything queued so far, or None if all is."""
        if self._pending:
            return self._pending
        return self._in_flight

    async def commit(self) -> None:
        """Wait until everything queued so far is committed (``StoreUnavailableError`` after
        ``timeout_s`` while the store fails; the writes stay queued)."""
        last = self._last_batch()
        if last is None:
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        last.waiters.append(done)
        self._wake.set()
        self._urgent.set()
        await self._wait(done)

    async def _wait(self, done: asyncio.Future[None]) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(done), self.timeout_s)
        except TimeoutError:
            raise StoreUnavailableError(
                f"the store ({self.store.url}) did not commit within {self.timeout_s} s; "
                f"the write is kept and retried, but this call gives up waiting"
            ) from None

    async def wait_submitted(self, done: asyncio.Future[None] | None) -> None:
        """Wait for ``submitted``'s future (``ConflictError`` if the store refused a job)."""
        if done is not None:
            await self._wait(done)

    async def close(self) -> None:
        """Commit what is queued (retrying while the store fails, up to ``timeout_s``) and stop
        the writer."""
        if self._task is None:
            return
        if self._last_batch() is not None:
            try:
                await self.commit()
            except StoreUnavailableError:
                _log.error("nsai-work: writes not committed at stop: %s", self.store.url)
        self._closing = True
        self._wake.set()
        task, self._task = self._task, None
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    # ---- the writer -------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if not self._pending:
                continue
            if not self._pending.waiters and self.flush_s > 0:  # let the batch gather
                self._urgent.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._urgent.wait(), self.flush_s)
            self._urgent.clear()
            batch, self._pending = self._pending, _Pending()
            if self.state_source is not None:
                batch.state = self.state_source()
            self._in_flight = batch
            try:
                await self._commit(batch)
            finally:
                self._in_flight = None

    async def _commit(self, batch: _Pending) -> None:
        delay = _RETRY_FIRST_S
        while True:
            try:
                try:
                    await self.store.write(batch.batch())
                except ConflictError:
                    await self._drop_conflicts(batch)  # (its read may fail too: below)
                    continue
            except Exception as exc:  # a store error, or a store's bug: the writer goes on
                self.failing = True
                if isinstance(exc, StoreError):
                    _log.warning("nsai-work: commit failed (%s); retrying in %.2f s", exc, delay)
                else:
                    _log.exception("nsai-work: the store raised; retrying in %.2f s", delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX_S)
                batch.absorb(self._pending)  # newer writes go in the same (ordered) commit
                self._pending = _Pending()
                continue
            break
        self.failing = False
        for waiter in batch.waiters:
            if not waiter.done():
                waiter.set_result(None)
        for callback in batch.callbacks:
            try:
                callback()
            except Exception:
                _log.exception("nsai-work: a callback after a commit raised")

    async def _drop_conflicts(self, batch: _Pending) -> None:
        """Some inserts hold a (tenant_id, id) the store already has: fail the submits that
        made them (all of each: a batch is all or nothing), drop their jobs, write the rest."""
        keys = list(batch.inserted)
        found = await self.store.get_many(keys)
        clashes = {key: batch.inserted[key] for key, job in zip(keys, found, strict=True) if job}
        if not clashes:  # not a duplicate after all: the retry reports what it is
            raise StoreError(f"the store refused a batch as a conflict: {self.store.url}")
        refused_submits = set(clashes.values())
        withdrawn = [key for key, submit in batch.inserted.items() if submit in refused_submits]
        later = self._pending  # (writes queued while this batch was in flight)
        for key in withdrawn:
            batch.jobs.pop(key, None)
            del batch.inserted[key]
            later.jobs.pop(key, None)  # an update of it would overwrite the store's job
        self._withdrawn.update(withdrawn)
        for key, submit in clashes.items():
            if submit is not None and not submit.done():
                submit.set_exception(
                    ConflictError(
                        f"duplicate job id {key[1]!r}: tenant {key[0]!r} already has a job "
                        f"with this id in the store; omit id to get a fresh one"
                    )
                )
        self.on_conflict(withdrawn)


#: How the engine writes: at once (memory) or by group commit (durable stores).
Writes = MemoryWrites | GroupCommit
