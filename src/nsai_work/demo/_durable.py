"""Where the demo keeps its jobs, and how a resumed run proves that none was lost.

The demo runs on a SQLite store: a named file (``--store``) or one in a temporary directory,
removed when the run ends unless it was interrupted. Beside the database, a journal
(``<file>.demo.jsonl``, one JSON object a line, appended and flushed as the run goes) records
the run's settings, the key of every job the scheduler admitted (written once ``submit``
returned, which with a durable store is after the commit) and how far the workload had got.

``--resume <file>`` reads the journal, then reads every journaled job from the store with a
client connection before the scheduler starts: a job missing from the store is lost, a terminal
one had finished before the interrupt, the others (pending, queued, or running when the demo
stopped) are recovered by the scheduler at its start. At the end of every durable run the same
read checks that every admitted job is in the store and has finished.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import nsai_work as work
from nsai_work.stores import JobKey, store_from_url

__all__ = ["Journal", "JournalRecord", "Place", "StoreCheck", "check_store", "place_for"]

_TERMINAL = frozenset(status.value for status in work.TERMINAL_STATUSES)


@dataclass
class Place:
    """The store a run uses: its URL, the database file (None for ``memory://``), and
    whether the demo made it in a temporary directory (removed after a complete run)."""

    url: str
    path: Path | None
    temporary: bool = False

    @property
    def durable(self) -> bool:
        """Whether jobs outlive the process."""
        return self.path is not None

    @property
    def journal(self) -> Path | None:
        """The journal's file, beside the database."""
        return None if self.path is None else self.path.with_name(self.path.name + ".demo.jsonl")

    def remove(self) -> None:
        """Delete a temporary store and its directory."""
        if self.temporary and self.path is not None:
            shutil.rmtree(self.path.parent, ignore_errors=True)


def place_for(store: str | None) -> Place:
    """The place named by ``--store`` (a path, ``sqlite:///abs/path`` or ``memory://``), or a
    new temporary SQLite file. ``ValueError`` says what is wrong with it."""
    if store is None:
        directory = Path(tempfile.mkdtemp(prefix="nsai-work-demo-"))
        path = directory / "work.db"
        return Place(f"sqlite://{path}", path, temporary=True)
    if store == "memory://":
        return Place(store, None)
    if "://" in store:
        scheme, _, rest = store.partition("://")
        if scheme != "sqlite" or not rest.startswith("/"):
            raise ValueError(
                f"--store takes a file path, sqlite:///absolute/path.db or memory://; got {store!r}"
            )
        path = Path(rest.split("?", 1)[0])
    else:
        path = Path(store).expanduser().resolve()
    if not path.parent.is_dir():
        raise ValueError(f"--store {store}: the directory {path.parent} does not exist")
    return Place(f"sqlite://{path}", path)


@dataclass
class JournalRecord:
    """What a journal says about a run so far."""

    settings: dict[str, Any]
    admitted: list[JobKey] = field(default_factory=list)
    position_s: float = 0.0
    finished: bool = False
    interrupted: int = 0


class Journal:
    """The append-only record of a durable run (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: TextIO | None = None

    def open(self) -> None:
        """Open for appending."""
        self._file = self.path.open("a", encoding="utf-8")

    def write(self, **record: Any) -> None:
        """Append one line and flush it to the OS."""
        if self._file is None:
            return
        self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._file.flush()

    def admitted(self, jobs: Iterable[work.Job]) -> None:
        """Record jobs that ``submit`` returned (committed and admitted)."""
        self.write(admitted=[[job.tenant_id, job.id] for job in jobs])

    def close(self) -> None:
        """Close the file."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def read(self) -> JournalRecord:
        """Everything recorded so far (``ValueError`` if it is not a demo journal)."""
        record: JournalRecord | None = None
        with self.path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                if not line.endswith("\n"):
                    break  # a line cut short by a crash: the ones before it stand
                try:
                    item = json.loads(line)
                except json.JSONDecodeError:
                    raise ValueError(f"{self.path}:{number} is not a demo journal line") from None
                if "settings" in item:
                    if record is None:
                        record = JournalRecord(settings=item["settings"])
                    continue
                if record is None:
                    raise ValueError(f"{self.path} does not start with the demo's settings")
                if "admitted" in item:
                    record.admitted.extend((tenant, job_id) for tenant, job_id in item["admitted"])
                if "position_s" in item:
                    record.position_s = max(record.position_s, float(item["position_s"]))
                if item.get("event") == "finished":
                    record.finished = True
                elif item.get("event") == "interrupted":
                    record.interrupted += 1
        if record is None:
            raise ValueError(f"{self.path} is empty: no demo run was recorded there")
        return record


@dataclass
class StoreCheck:
    """What the store holds of the jobs a journal names."""

    admitted: int
    found: int
    by_status: dict[str, int]
    unfinished: list[JobKey]

    @property
    def lost(self) -> int:
        """Admitted jobs the store does not hold."""
        return self.admitted - self.found

    @property
    def finished(self) -> int:
        """Admitted jobs that reached a terminal state."""
        return sum(n for status, n in self.by_status.items() if status in _TERMINAL)


def check_store(url: str, keys: Sequence[JobKey]) -> StoreCheck:
    """Read ``keys`` from the store at ``url`` as a client (the scheduler need not run)."""
    return asyncio.run(_check(url, keys))


async def _check(url: str, keys: Sequence[JobKey]) -> StoreCheck:
    store = store_from_url(url)
    await store.open("client")
    try:
        statuses: Counter[str] = Counter()
        unfinished: list[JobKey] = []
        found = 0
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), 500):
            chunk = unique[start : start + 500]
            for key, job in zip(chunk, await store.get_many(chunk), strict=True):
                if job is None:
                    continue
                found += 1
                status = job.status.value
                statuses[status] += 1
                if status not in _TERMINAL:
                    unfinished.append(key)
        return StoreCheck(len(unique), found, dict(statuses), unfinished)
    finally:
        await store.close()
