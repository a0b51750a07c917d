"""An ordered index of seqs, for the memory store's listings (``_memory_table``): a sorted
set of ints kept in chunks, sortedcontainers' design with smaller chunks.

An index is a list of non-empty sorted chunks (lists), each chunk's seqs below the next
chunk's. A chunk holds at most ``2 * LOAD`` seqs and, unless it is its index's only chunk, at
least ``LOAD // 2``, so an index of n seqs has at most ``2n / LOAD + 1`` chunks. Adding or
removing a seq is a bisection for its chunk and an insertion or deletion there (O(log n), plus
moving at most ``2 * LOAD`` pointers); the usual cases, a new job's seq (the largest) and one
of the oldest, touch the last or first chunk only. A page of the largest seqs below a cursor is
one bisection, then a slice of each chunk walked.

A *cell* holds one index per status (``cell_add`` and ``cell_remove`` take the status's
position), None while it has no job in that status.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from operator import itemgetter

__all__ = [
    "LOAD",
    "Cell",
    "Index",
    "cell_add",
    "cell_remove",
    "index_add",
    "index_of",
    "index_page",
    "index_remove",
]

#: An ordered index: seqs in ascending order, kept in non-empty sorted chunks (module docstring).
Index = list[list[int]]
#: A cell: at a status's position, the index of its jobs in that status, or None while it has
#: none.
Cell = list[Index | None]
#: Chunk size: an insertion or removal within a chunk moves at most ``2 * LOAD`` pointers, a few
#: hundred nanoseconds.
LOAD = 256
_last = itemgetter(-1)  # a chunk's largest seq: the key bisect finds a chunk by


def cell_add(cell: Cell, at: int, seq: int) -> None:
    """Add ``seq`` to the cell's index at ``at`` (made when it has none); the usual case, a
    recent job, is an append to the last chunk."""
    index = cell[at]
    if index is None:
        cell[at] = [[seq]]
        return
    chunk = index[-1]
    if chunk[-1] < seq and len(chunk) < 2 * LOAD:
        chunk.append(seq)
    else:
        index_add(index, seq)


def cell_remove(cell: Cell, at: int, seq: int) -> None:
    """Remove ``seq`` from the cell's index at ``at`` (None once empty); the usual case, one of
    the oldest jobs of the index, is a deletion in its first chunk."""
    index = cell[at]
    assert index is not None
    chunk = index[0]
    if seq <= chunk[-1] and len(chunk) > (1 if len(index) == 1 else LOAD // 2):
        del chunk[bisect_left(chunk, seq)]  # the first chunk, left big enough
    else:
        index_remove(index, seq)
        if not index:
            cell[at] = None


def index_add(index: Index, seq: int) -> None:
    """Add ``seq``, not in ``index`` yet: an append when it is the largest (a new job, or one
    moved soon after it came), else a bisection for its chunk and an insertion there. A chunk
    past ``2 * LOAD`` seqs is split in two."""
    if not index:
        index.append([seq])
        return
    i = len(index) - 1
    chunk = index[i]
    if chunk[-1] < seq:
        chunk.append(seq)
    else:
        i = bisect_left(index, seq, key=_last)
        chunk = index[i]
        insort(chunk, seq)
    if len(chunk) > 2 * LOAD:
        index[i : i + 1] = [chunk[:LOAD], chunk[LOAD:]]


def index_remove(index: Index, seq: int) -> None:
    """Remove ``seq``, which is in ``index``: the first or last chunk is checked first (jobs
    tend to move in the order they came), else a bisection finds it. A chunk left with fewer
    than ``LOAD // 2`` seqs is merged with a neighbour (and the two split again if past
    ``2 * LOAD``), so an index of n seqs has at most ``2n / LOAD + 1`` chunks; an index left
    empty has no chunk."""
    if len(index) == 1:
        chunk = index[0]
        del chunk[bisect_left(chunk, seq)]
        if not chunk:
            index.clear()
        return
    if seq <= index[0][-1]:
        i = 0
    elif seq > index[-2][-1]:
        i = len(index) - 1
    else:
        i = bisect_left(index, seq, key=_last)
    chunk = index[i]
    del chunk[bisect_left(chunk, seq)]
    if len(chunk) < LOAD // 2:
        left = i - 1 if i else 0
        merged = index[left] + index[left + 1]
        if len(merged) > 2 * LOAD:
            half = len(merged) // 2
            index[left : left + 2] = [merged[:half], merged[half:]]
        else:
            index[left : left + 2] = [merged]


def index_page(index: Index, before: int | None, count: int) -> list[int]:
    """Up to ``count`` seqs of ``index`` below ``before`` (all when None), largest first: one
    bisection, then a slice of each chunk walked."""
    if not index:
        return []
    i = len(index) - 1
    end = len(index[i])
    if before is not None:
        i = bisect_left(index, before, key=_last)
        if i == len(index):
            i -= 1
            end = len(index[i])
        else:
            end = bisect_left(index[i], before)
    page: list[int] = []
    while True:
        page += index[i][max(0, end - (count - len(page))) : end][::-1]
        i -= 1
        if len(page) >= count or i < 0:
            return page
        end = len(index[i])


def index_of(seqs: list[int]) -> Index:
    """An index of these seqs, sorted and distinct: chunks of ``LOAD``, the last one merged
    into the one before when it would be below ``LOAD // 2``."""
    index = [seqs[i : i + LOAD] for i in range(0, len(seqs), LOAD)]
    if len(index) > 1 and len(index[-1]) < LOAD // 2:
        index[-2:] = [index[-2] + index[-1]]
    return index
