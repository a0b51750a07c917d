"""One run of the demo: start the scheduler on its store, feed it the workload, show it, stop it
(at the end, or at Ctrl-C leaving the store resumable), and print the summary."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, Final, TextIO

import nsai_work as work

from ._durable import Journal, JournalRecord, Place, StoreCheck, check_store, place_for
from ._live import Frame, LiveView, PlainView
from ._measure import EVENTS, Recorder, Sampler
from ._summary import Outcome, build, render
from ._workload import (
    Arrivals,
    Submission,
    backends,
    pools,
    register,
    tenants,
)

__all__ = ["EXIT_INTERRUPTED", "Settings", "UsageError", "run"]

EXIT_INTERRUPTED: Final = 130  # 128 + SIGINT, as shells report a Ctrl-C
_HANDLER_ID: Final = "nsai-work-demo"
_TICK_S: Final = 0.05
_REFRESH_S: Final = 0.25
_STOP_TIMEOUT_S: Final = 2.0


class UsageError(Exception):
    """Options that do not go together, or a store that cannot be used (exit code 2)."""


@dataclass
class Settings:
    """What a run does (the resumed run of an interrupted one takes its settings)."""

    duration_s: float
    seed: int
    store: str | None = None
    resume: str | None = None
    json_to: str | None = None  # "-" for stdout, or a file
    plain: bool = False
    serve: bool = False
    port: int = 8080  # the dashboard's, with serve


@dataclass
class _State:
    place: Place
    journal: Journal | None
    arrivals: Arrivals
    recorder: Recorder = field(default_factory=Recorder)
    sampler: Sampler = field(default_factory=Sampler)
    admitted: int = 0
    resubmits: dict[str, int] = field(default_factory=dict)
    deferred: list[tuple[float, Submission]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    max_depth: int = 50
    cancel_due: bool = False  # a cancel waits for a training run to cancel
    budget_noted: bool = False
    position_s: float = 0.0
    keys: list[tuple[str, str]] = field(default_factory=list)  # of the jobs this run admitted
    finished_before: int = 0  # finished jobs in the restored counters (a resumed run)
    stuck: int = 0  # runs still going when the scheduler stopped (left to recovery)
    seen: dict[str, int] = field(default_factory=dict)  # counters already noted


def run(settings: Settings) -> int:
    """Run the demo with ``settings``; returns the exit code (0: every admitted job finished
    and none was lost; 130: interrupted, the store is kept for ``--resume``; 2: bad options).

    The first Ctrl-C stops the run cleanly; a second one stops it at once (the SQLite store
    stays consistent and ``--resume`` still works; the journal may miss the last moments)."""
    try:
        return _run(settings)
    except KeyboardInterrupt:
        sys.stderr.write(
            "\nnsai-work demo: stopped at once (Ctrl-C again, or before the run began); the "
            "store is consistent and a run that began can be resumed with --resume\n"
        )
        return EXIT_INTERRUPTED


def _run(settings: Settings) -> int:
    human = sys.stderr if settings.json_to == "-" else sys.stdout
    try:
        place, record, pre = _prepare(settings)
    except UsageError as error:
        sys.stderr.write(f"nsai-work demo: {error}\n")
        return 2
    state = _State(
        place=place,
        journal=None if place.journal is None else Journal(place.journal),
        arrivals=Arrivals(
            settings.duration_s,
            settings.seed,
            start_s=0.0 if record is None else record.position_s,
        ),
    )
    state.position_s = state.arrivals.start_s
    before = [] if record is None else record.admitted
    register(settings.seed)
    if state.journal is not None:
        state.journal.open()
        if record is None:
            state.journal.write(
                settings={"duration_s": settings.duration_s, "seed": settings.seed, "version": 1}
            )
    if record is not None and pre is not None:
        human.write(
            f"resuming {place.path} at {record.position_s:.1f} s: {pre.admitted:,} jobs were "
            f"admitted before the interrupt; {pre.finished:,} had finished, "
            f"{len(pre.unfinished):,} are recovered now, {pre.lost:,} lost\n"
        )
    interrupted = threading.Event()
    logs = _Logs()
    with _sigint(interrupted), logs:
        work.telemetry.attach_many(_HANDLER_ID, list(EVENTS), state.recorder.on_event)
        try:
            work.start(
                pools=pools(),
                backends=backends(),
                tenants=tenants(settings.duration_s),
                store=place.url,
                seed=settings.seed,
                finished_ttl_s=7 * 86_400.0,  # every job stays readable for the checks
                finished_max=10_000_000,
                exit_timeout_s=_STOP_TIMEOUT_S,
            )
        except work.WorkError as error:
            work.telemetry.detach(_HANDLER_ID)
            sys.stderr.write(f"nsai-work demo: cannot start on {place.url}: {error}\n")
            return 1
        state.finished_before = work.stats().totals.finished
        served = None
        if settings.serve:
            from ._serve import serve

            ids = [tenant.id for tenant in tenants(settings.duration_s)]
            served = serve("127.0.0.1", settings.port, ids, human)
        view = _view(settings, human)
        started = time.monotonic()
        try:
            ended = _loop(state, view, interrupted, logs)
            stats = work.stats()
        finally:
            view.close()
            if served is not None:
                served.stop()
            work.telemetry.detach(_HANDLER_ID)
            work.stop(_STOP_TIMEOUT_S)
        elapsed = time.monotonic() - started
    state.stuck = logs.left_running
    for message in logs.take():  # anything else the library said, after the view
        human.write(f"{message}\n")
    if state.journal is not None:
        state.journal.write(position_s=round(state.position_s, 3))
    check = None if not place.durable else check_store(place.url, before + state.keys)
    if ended == "interrupted":
        return _interrupted(settings, state, check, human)
    finished = ended == "drained"
    recovery = None
    if record is not None and pre is not None:
        recovered = check_store(place.url, pre.unfinished)
        recovery = {
            "admitted_before": pre.admitted,
            "in_store": pre.found,
            "lost": pre.lost,
            "finished_before": pre.finished,
            "recovered": len(pre.unfinished),
            "recovered_finished": recovered.finished,
            "position_s": record.position_s,
        }
    outcome = Outcome(
        place=place,
        duration_s=settings.duration_s,
        elapsed_s=elapsed,
        admitted=state.admitted,
        finished_before=state.finished_before,
        resubmits=state.resubmits,
        stats=stats,
        check=check,
        recovery=recovery,
    )
    summary = build(outcome, state.recorder, state.sampler)
    summary["drained"] = finished
    human.write("\n" + "\n".join(render(summary)) + "\n")
    human.flush()
    _write_json(settings, summary)
    if state.journal is not None:
        state.journal.write(event="finished")
        state.journal.close()
    place.remove()
    ok = finished and (check is None or (check.lost == 0 and check.finished == check.admitted))
    return 0 if ok else 1


class _Logs(logging.Handler):
    """The library's log records during the run: kept (not printed over the live view) and
    shown after it, except the one per run still going at the stop, which are counted."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []
        self.left_running = 0
        self._lock = threading.Lock()
        self._logger = logging.getLogger("nsai_work")
        self._propagate = True

    def emit(self, record: logging.LogRecord) -> None:
        """Keep one record."""
        message = record.getMessage()
        with self._lock:
            if "still running at stop" in message:
                self.left_running += 1
            elif not message.startswith("nsai-work: recovered "):  # the demo says it itself
                self.messages.append(message)

    def take(self) -> list[str]:
        """The messages kept since the last call."""
        with self._lock:
            out, self.messages = self.messages, []
        return out

    def __enter__(self) -> _Logs:
        self._propagate = self._logger.propagate
        self._logger.addHandler(self)
        self._logger.propagate = False
        return self

    def __exit__(self, *exc: object) -> None:
        self._logger.removeHandler(self)
        self._logger.propagate = self._propagate


def _prepare(settings: Settings) -> tuple[Place, JournalRecord | None, StoreCheck | None]:
    """The store to use; for a resumed run, its journal and what the store holds of it."""
    if settings.resume is None:
        try:
            place = place_for(settings.store)
        except ValueError as error:
            raise UsageError(str(error)) from None
        if place.path is not None and not place.temporary and place.path.exists():
            raise UsageError(
                f"--store {place.path} already holds jobs: continue that run with --resume "
                f"{place.path}, or name a new file"
            )
        return place, None, None
    try:
        place = place_for(settings.resume)
    except ValueError as error:
        raise UsageError(str(error).replace("--store", "--resume")) from None
    if place.path is None or not place.path.exists():
        raise UsageError(f"--resume {settings.resume}: no such database file")
    assert place.journal is not None
    if not place.journal.exists():
        raise UsageError(
            f"--resume {settings.resume}: no demo journal beside it ({place.journal.name}): "
            f"only a store the demo wrote can be resumed"
        )
    try:
        record = Journal(place.journal).read()
    except (ValueError, KeyError, TypeError) as error:
        raise UsageError(f"--resume {settings.resume}: {error}") from None
    settings.duration_s = float(record.settings["duration_s"])
    settings.seed = int(record.settings["seed"])
    pre = check_store(place.url, record.admitted)
    return place, record, pre


@contextlib.contextmanager
def _sigint(interrupted: threading.Event) -> Iterator[None]:
    """The first Ctrl-C asks the run to stop cleanly; a second one raises KeyboardInterrupt."""

    def on_sigint(signum: int, frame: FrameType | None) -> None:
        if interrupted.is_set():
            raise KeyboardInterrupt
        interrupted.set()

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _view(settings: Settings, stream: TextIO) -> LiveView | PlainView:
    live = (
        not settings.plain
        and stream.isatty()
        and os.environ.get("TERM", "") != "dumb"
        and not os.environ.get("CI")
    )
    if live:
        return LiveView(stream)
    return PlainView(stream, every_s=max(1.0, settings.duration_s / 15.0))


def _loop(
    state: _State, view: LiveView | PlainView, interrupted: threading.Event, logs: _Logs
) -> str:
    """Submit, sample and show until every job has finished (``"drained"``), the drain takes
    too long (``"timeout"``) or Ctrl-C (``"interrupted"``)."""
    arrivals = state.arrivals
    started = time.monotonic()
    start_s = arrivals.start_s
    drain_deadline = arrivals.end_s + max(30.0, arrivals.duration_s)
    next_refresh = 0.0
    next_journal = 0.0
    while not interrupted.is_set():
        now = time.monotonic()
        position = start_s + (now - started)
        state.position_s = position
        if position < arrivals.end_s:
            _arrive(state, position, now)
        if state.cancel_due or arrivals.once("cancel", 0.45, position):
            state.cancel_due = position < arrivals.end_s and not _cancel_one(state, position)
        if now >= next_refresh:
            next_refresh = now + _REFRESH_S
            stats = work.stats()
            state.sampler.sample(stats, now, state.recorder.snapshot())
            _watch(state, stats, position)
            state.notes.extend(f"{position:5.1f} s  {m}" for m in logs.take())
            view.update(_frame(state, stats, position))
            waiting = stats.totals.pending + stats.totals.queued + stats.totals.running
            if position >= arrivals.end_s and not waiting and not state.deferred:
                return "drained"
            if position >= drain_deadline:
                return "timeout"
        if state.journal is not None and now >= next_journal:
            next_journal = now + 1.0
            state.journal.write(position_s=round(position, 3))
        time.sleep(max(0.0, _TICK_S - (time.monotonic() - now)))
    return "interrupted"


def _arrive(state: _State, position: float, now: float) -> None:
    held = {sub.stream for _, sub in state.deferred}
    due = [sub for at, sub in state.deferred if at <= now]
    state.deferred = [(at, sub) for at, sub in state.deferred if at > now]
    for sub in due:
        held.discard(sub.stream)
    for sub in [*due, *state.arrivals.due(position, state.recorder.queued_now(), held)]:
        _submit(state, sub, position, now)


def _submit(state: _State, sub: Submission, position: float, now: float) -> None:
    recorder = state.recorder
    recorder.submitting(sub.jobs)
    try:
        admitted = work.submit_many(sub.jobs)
    except work.RateLimitedError as error:
        recorder.not_submitted(sub.jobs)
        state.deferred.append((now + max(error.retry_after_s, _TICK_S), sub))
        for job in sub.jobs:
            state.resubmits[job.tenant_id] = state.resubmits.get(job.tenant_id, 0) + 1
        return
    except work.AdmissionError as error:
        recorder.not_submitted(sub.jobs)
        if "budget" in str(error) and not state.budget_noted:
            state.budget_noted = True
            state.notes.append(
                f"{position:5.1f} s  {sub.tenant}'s budget ran out: its next submits are refused"
            )
        return
    state.admitted += len(admitted)
    state.keys.extend((job.tenant_id, job.id) for job in admitted)
    if state.journal is not None:
        state.journal.admitted(admitted)


def _cancel_one(state: _State, position: float) -> bool:
    with state.recorder.lock:
        running = list(state.recorder.training.items())
    for job_id, tenant in running:
        job = work.cancel(job_id, reason="diverged: the loss went to NaN")
        if job.status in work.TERMINAL_STATUSES and job.status != work.Status.CANCELED:
            continue  # it ended just before: cancel another
        state.notes.append(f"{position:5.1f} s  {tenant} canceled a diverging training run")
        return True
    return False


def _watch(state: _State, stats: work.Stats, position: float) -> None:
    """Notes of what just happened (timeouts, failures), from the counters."""
    for counts in stats.by_priority.values():
        state.max_depth = max(state.max_depth, counts.pending + counts.queued)
    seen = state.seen
    for tenant, counts in stats.by_tenant.items():
        for what in ("timeout", "failed"):
            value = getattr(counts, what)
            key = f"{tenant}:{what}"
            if value > seen.get(key, 0):
                if what == "timeout":
                    state.notes.append(
                        f"{position:5.1f} s  a job of {tenant} ran past its timeout and was killed"
                    )
                else:
                    state.notes.append(
                        f"{position:5.1f} s  {value} job(s) of {tenant} failed for good so far"
                    )
                seen[key] = value


def _frame(state: _State, stats: work.Stats, position: float) -> Frame:
    return Frame(
        position_s=position,
        duration_s=state.arrivals.duration_s,
        end_s=state.arrivals.end_s,
        stats=stats,
        admitted=state.admitted,
        shares=state.sampler.recent_shares(),
        fair=state.recorder.fair_share(),
        latencies=state.recorder.latencies(),
        notes=state.notes,
        store=state.place.url,
        draining=position >= state.arrivals.end_s,
        max_depth=state.max_depth,
    )


def _interrupted(settings: Settings, state: _State, check: StoreCheck | None, human: TextIO) -> int:
    """Ctrl-C: say what the store keeps and how to resume; exit code 130."""
    place = state.place
    if state.journal is not None:
        state.journal.write(event="interrupted", position_s=round(state.position_s, 3))
        state.journal.close()
    summary: dict[str, Any] = {
        "version": 1,
        "interrupted": True,
        "position_s": round(state.position_s, 3),
        "store": {"url": place.url, "kept": place.durable},
        "jobs": {"admitted": state.admitted},
        "resume": None,
    }
    if check is None:
        human.write(f"\ninterrupted at {state.position_s:.1f} s (memory://: nothing to resume)\n")
    else:
        resume = f'make demo DEMO_ARGS="--resume {place.path}"'
        left = f"; {state.stuck} of them were still running" if state.stuck else ""
        human.write(
            f"\ninterrupted at {state.position_s:.1f} s: {check.found:,} of {check.admitted:,} "
            f"admitted jobs are in the store {place.path}, {check.finished:,} finished and "
            f"{len(check.unfinished):,} not yet{left}\nresume with: {resume}\n"
        )
        summary["resume"] = resume
        summary["durability"] = {
            "admitted": check.admitted,
            "in_store": check.found,
            "finished": check.finished,
            "unfinished": len(check.unfinished),
            "lost": check.lost,
            "left_running": state.stuck,
        }
    human.flush()
    _write_json(settings, summary)
    return EXIT_INTERRUPTED


def _write_json(settings: Settings, summary: dict[str, Any]) -> None:
    if settings.json_to is None:
        return
    text = json.dumps(summary, indent=2) + "\n"
    if settings.json_to == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        with open(settings.json_to, "w", encoding="utf-8") as out:
            out.write(text)
