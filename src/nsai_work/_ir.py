"""The Job IR: one representation for every kind of work (tool calls, experiment steps,
training, inference), as msgspec Structs.

A ``Job`` is what a caller builds and submits; the scheduler answers with new snapshots of it
as it moves through its lifecycle (the Structs are frozen: a Job you hold never changes under
you). Constraints on fields (``ge``, ``min_length`` ...) are checked when a job crosses an edge
(``submit``, the HTTP API, a store row) with one reused decoder, so a bad field is reported with
its ``$.path`` and the rule. ``schema/job.schema.json`` is generated from these types.
"""

from __future__ import annotations

import datetime as _dt
import os as _os
import random as _random
import re as _re
import time as _time
from enum import StrEnum
from typing import Annotated, Any, Final, Literal

import msgspec
from msgspec import Meta, Struct, field

__all__ = [
    "IDENTIFIER_PATTERN",
    "IDENTIFIER_RE",
    "TERMINAL_STATUSES",
    "Attempt",
    "Audit",
    "Backoff",
    "Constraints",
    "Job",
    "JobError",
    "Pool",
    "Prices",
    "Priority",
    "PriorityGuard",
    "Progress",
    "Quota",
    "Resources",
    "RetryPolicy",
    "Status",
    "Tenant",
    "is_identifier",
    "new_job_id",
    "utc_now",
]


class Priority(StrEnum):
    """Strict priority levels, highest first. Compare ``.rank`` (0 is highest)."""

    REALTIME = "realtime"
    INTERACTIVE = "interactive"
    BATCH = "batch"
    OFFLINE = "offline"

    @property
    def rank(self) -> int:
        """0 for realtime ... 3 for offline."""
        return _PRIORITY_RANK[self]


_PRIORITY_RANK: Final = {p: i for i, p in enumerate(Priority)}


class Status(StrEnum):
    """Lifecycle states; see ``TERMINAL_STATUSES`` and DESIGN.md's lifecycle table."""

    PENDING = "pending"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMEOUT = "timeout"
    CANCELED = "canceled"

    @property
    def is_terminal(self) -> bool:
        """True for succeeded, failed, timeout and canceled."""
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES: Final = frozenset(
    {Status.SUCCEEDED, Status.FAILED, Status.TIMEOUT, Status.CANCELED}
)


class Backoff(StrEnum):
    """How the delay between attempts grows."""

    EXPONENTIAL = "exponential"
    LINEAR = "linear"
    CONSTANT = "constant"


#: The rule for identifiers: tenant ids, namespaces, kinds, pool names (and ALTAR tool names).
#: An ASCII letter or digit, then up to 127 ASCII letters, digits or ``. _ : @ -``: safe in log
#: lines, metric labels, URLs and file names, and wide enough for ``module:qualname`` kinds,
#: ``user@org`` tenants and ``local:async`` pools. This is the JSON Schema (ECMA-262) form; in
#: Python match it with ``IDENTIFIER_RE.fullmatch`` or ``is_identifier`` (``re.match`` and
#: ``re.search`` would let a trailing newline through ``$``).
IDENTIFIER_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$"
IDENTIFIER_RE: Final = _re.compile(IDENTIFIER_PATTERN)


def is_identifier(value: object) -> bool:
    """True when ``value`` is a str that follows ``IDENTIFIER_PATTERN``."""
    return isinstance(value, str) and IDENTIFIER_RE.fullmatch(value) is not None


# Reusable field types: the constraint is part of the type, so the JSON Schema shows it.
NonEmptyStr = Annotated[str, Meta(min_length=1, max_length=256)]
#: A str following ``IDENTIFIER_PATTERN``. msgspec checks its length; the pattern is in the JSON
#: Schema and is checked in Python where a value enters (``validate_new_job``,
#: ``validate_struct``, the config, ``register_handler``): a ``Meta(pattern=...)`` would cost
#: every decoded Job about 1 µs (measured: three patterns in the decoder), and its ``$``
#: accepts a trailing newline.
Identifier = Annotated[
    str, Meta(min_length=1, max_length=128, extra_json_schema={"pattern": IDENTIFIER_PATTERN})
]
NonNegInt = Annotated[int, Meta(ge=0)]
AwareDatetime = Annotated[_dt.datetime, Meta(tz=True)]

# Upper bounds of amounts, far above any real machine, cluster or bill, and low enough that the
# scheduler's arithmetic (cpu and custom amounts in integer milli-units, a cost estimate of price
# x amount x hours) stays finite and exact. Every float field is bounded, so NaN and infinity
# fail its constraint; docs/api.md lists the bounds.
MAX_CPU: Final = 1_000_000  # cores
MAX_MEMORY_MB: Final = 1_000_000_000_000  # 10**12 MB, an exabyte
MAX_AMOUNT: Final = 1_000_000_000_000  # a custom amount (licenses, tokens, ...)
MAX_GPUS: Final = 1_000_000  # GPUs of one type in a pool or a quota
MAX_SLOTS: Final = 1_000_000  # jobs running at once on one pool
MAX_COUNT: Final = 1_000_000_000  # max_queued, max_running, burst
MAX_TIMEOUT_MS: Final = 31_536_000_000  # 365 days
MAX_USD: Final = 1_000_000_000  # max_cost_usd, budget_usd
MAX_USD_PER_HOUR: Final = 1_000_000  # every price
MIN_SUBMIT_RATE: Final = 1e-6  # one submit in about 11.6 days: a slower rate's wait is unbounded
MAX_SUBMIT_RATE: Final = 1_000_000  # submits per second
MAX_SCHEDULE_IN_S: Final = 31_536_000.0  # 365 days
MAX_DEPENDENCIES: Final = 10_000  # depends_on entries of one job
MAX_PERIOD_S: Final = 315_360_000  # ten years

Cpu = Annotated[float, Meta(ge=0, le=MAX_CPU)]
MemoryMb = Annotated[int, Meta(ge=0, le=MAX_MEMORY_MB)]
Amount = Annotated[float, Meta(ge=0, le=MAX_AMOUNT)]
GpuCount = Annotated[int, Meta(ge=0, le=MAX_GPUS)]
Count = Annotated[int, Meta(ge=0, le=MAX_COUNT)]
Usd = Annotated[float, Meta(ge=0, le=MAX_USD)]
UsdPerHour = Annotated[float, Meta(ge=0, le=MAX_USD_PER_HOUR)]


class RetryPolicy(Struct, frozen=True, kw_only=True, gc=False, omit_defaults=True):
    """When and how often a failed attempt is retried.

    Attempt ``n`` (the one that just failed, from 1) waits ``base_delay_ms * 2**(n-1)``
    (exponential), ``base_delay_ms * n`` (linear) or ``base_delay_ms`` (constant), capped at
    ``max_delay_ms``; with ``jitter`` the wait is drawn uniformly from [delay/2, delay].
    ``max_attempts`` counts every run, the first included.
    """

    max_attempts: Annotated[int, Meta(ge=1, le=1000)] = 3
    backoff: Backoff = Backoff.EXPONENTIAL
    base_delay_ms: Annotated[int, Meta(ge=0, le=86_400_000)] = 1000
    max_delay_ms: Annotated[int, Meta(ge=0, le=86_400_000)] = 60_000
    jitter: bool = True
    retry_on_timeout: bool = True


DEFAULT_RETRY_POLICY: Final = RetryPolicy()


class Resources(Struct, frozen=True, kw_only=True, gc=False, omit_defaults=True):
    """What one run of the job needs. Unset fields ask nothing of that dimension.

    ``gpu`` names a GPU type; ``gpu_count`` defaults to 1 when ``gpu`` is set. A ``gpu_count``
    without ``gpu`` takes GPUs of any one type. ``custom`` asks named amounts a pool declares.
    """

    cpu: Cpu | None = None
    memory_mb: MemoryMb | None = None
    gpu: NonEmptyStr | None = None
    gpu_count: Annotated[int, Meta(ge=0, le=1024)] = 0
    timeout_ms: Annotated[int, Meta(gt=0, le=MAX_TIMEOUT_MS)] | None = None
    max_cost_usd: Usd | None = None
    custom: dict[NonEmptyStr, Amount] = {}

    @property
    def gpus_needed(self) -> int:
        """How many GPUs one run takes."""
        if self.gpu_count:
            return self.gpu_count
        return 1 if self.gpu is not None else 0


DEFAULT_RESOURCES: Final = Resources()


class Constraints(Struct, frozen=True, kw_only=True, gc=False, omit_defaults=True):
    """Where, when and how often the job may run.

    - ``depends_on``: ids of the same tenant's jobs that must succeed before this one runs
      (submitted earlier, or in the same batch); the job is pending with the waiting reason
      ``dependencies`` until then. One that ends failed, timeout or canceled cancels this job
      (``dependency_failed: <id> (<status>)``), and so on down, unless ``allow_failure`` lets
      it run anyway: True for all of its dependencies, or a tuple of the ids it may survive.
    - ``run_at`` (an aware datetime), or ``schedule_in_s`` seconds after the submit (turned
      into ``run_at`` at admission): the job is pending with the waiting reason ``scheduled``
      until then.
    - ``deadline``: a job that has not started by then ends canceled (``deadline_exceeded``);
      a running job is bounded by its timeout, not by its deadline.
    - ``unique_key``: at most one job of the tenant with this key counts at a time; a submit
      of another returns the one that counts (``Job.duplicate`` is True on what it returns).
      A job counts while its status is among ``unique_states`` (None: pending, queued and
      running) and, with ``unique_period_s``, for that many seconds after its submit.
    """

    retry_policy: RetryPolicy = DEFAULT_RETRY_POLICY
    concurrency_group: NonEmptyStr | None = None
    depends_on: tuple[NonEmptyStr, ...] = ()
    run_at: AwareDatetime | None = None
    deadline: AwareDatetime | None = None
    backend: NonEmptyStr | None = None
    unique_key: NonEmptyStr | None = None
    pool_labels: dict[NonEmptyStr, str] = {}
    allow_failure: bool | tuple[NonEmptyStr, ...] = False
    schedule_in_s: Annotated[float, Meta(ge=0, le=MAX_SCHEDULE_IN_S)] | None = None
    unique_states: tuple[Status, ...] | None = None
    unique_period_s: Annotated[float, Meta(gt=0, le=MAX_SCHEDULE_IN_S)] | None = None


DEFAULT_CONSTRAINTS: Final = Constraints()


class JobError(Struct, frozen=True, kw_only=True, gc=False, omit_defaults=True):
    """Why an attempt failed: the exception's type, message and traceback."""

    type: str
    message: str
    traceback: str | None = None
    attempt: int = 0


class Attempt(Struct, frozen=True, kw_only=True, gc=False, omit_defaults=True):
    """One run of a job on a backend pool, and how it ended.

    ``handle`` is where the backend ran it, when the backend says (``ctx.set_handle``): a
    process id, a Ray task or job id, a Modal call id. A restarted scheduler uses it to stop a
    run its dead predecessor left going (``Backend.cancel_orphan``)."""

    number: int
    backend: str
    pool: str
    started_at: _dt.datetime
    finished_at: _dt.datetime | None = None
    status: Status = Status.RUNNING
    error: JobError | None = None
    cost_usd: float = 0.0
    handle: str | None = None


class Audit(Struct, frozen=True, kw_only=True, gc=False, omit_defaults=True):
    """Who canceled or retried a job, and when: ``by`` is the caller, ``"key:<id>"`` for an API
    key of the HTTP API (``key_name`` its name, if it has one; never its secret) or
    ``"local"`` for a call in the process (the embedded scheduler, a store client). A cancel's
    record is on the canceled job, with its ``reason``; a retry's is on the copy (whose
    ``retry_of`` names the job retried)."""

    action: Literal["cancel", "retry"]
    by: str
    at: _dt.datetime
    key_name: str | None = None
    reason: str | None = None


#: Who a caller is, for audit records: (``Audit.by``, ``Audit.key_name``).
Actor = tuple[str, str | None]
#: The caller of the embedded API.
LOCAL_ACTOR: Final[Actor] = ("local", None)


class Progress(Struct, frozen=True, kw_only=True, gc=False):
    """The last progress a running job reported: ``fraction`` in [0, 1] and a message."""

    fraction: Annotated[float, Meta(ge=0, le=1)]
    message: str | None = None


class Prices(Struct, frozen=True, kw_only=True, omit_defaults=True, forbid_unknown_fields=True):
    """What a pool charges, in USD per hour: per cpu core, per GB of memory, per GPU by type
    (``default_gpu_hour`` for types not listed), and per slot (a run's fixed cost).

    The defaults are typical on-demand cloud prices (2026), so estimates mean something out of
    the box; declare your own per pool (``Pool(prices=work.Prices(...))``), e.g. zeros for
    hardware you own.
    """

    cpu_hour: UsdPerHour = 0.04
    memory_gb_hour: UsdPerHour = 0.005
    gpu_hour: dict[NonEmptyStr, UsdPerHour] = field(
        default_factory=lambda: {"A100": 3.0, "H100": 6.0, "L4": 0.8, "T4": 0.35}
    )
    default_gpu_hour: UsdPerHour = 2.5
    slot_hour: UsdPerHour = 0.0


DEFAULT_PRICES: Final = Prices()


class Pool(Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Capacity a backend offers: one slot per running job, plus what jobs' Resources ask.

    ``cpu`` and ``memory_mb`` left unset do not limit; GPUs and ``custom`` amounts a pool does
    not list are not offered. ``labels`` describe the pool (region, gpu family ...) and jobs may
    ask for them (``constraints.pool_labels``); ``prices`` price its resources. ``name`` is an
    identifier (``IDENTIFIER_PATTERN``).
    """

    name: Identifier
    slots: Annotated[int, Meta(ge=0, le=MAX_SLOTS)] = 64
    cpu: Cpu | None = None
    memory_mb: MemoryMb | None = None
    gpus: dict[NonEmptyStr, GpuCount] = {}
    custom: dict[NonEmptyStr, Amount] = {}
    labels: dict[NonEmptyStr, str] = {}
    prices: Prices = DEFAULT_PRICES


class Quota(Struct, frozen=True, kw_only=True, omit_defaults=True, forbid_unknown_fields=True):
    """Limits of a tenant (or of one of its namespaces). Unset means unlimited.

    - ``max_queued``: jobs waiting (pending + queued); beyond it a submit is rejected.
    - ``max_running``: jobs running at once; beyond it jobs stay queued.
    - ``cpu``, ``memory_mb``, ``gpus`` (by type): resources in use at once by running jobs. When
      ``gpus`` lists types, only those types (up to those counts) may be used.
    - ``submit_rate`` (jobs per second) and ``burst``: a token bucket on submits; ``burst``
      defaults to ``max(1, submit_rate)``.
    - ``budget_usd`` per ``budget_period_s`` (default a day, in fixed windows): spend so far plus
      the estimated maximum cost of admitted jobs must stay within it at admission.
    """

    max_queued: Count | None = None
    max_running: Count | None = None
    cpu: Cpu | None = None
    memory_mb: MemoryMb | None = None
    gpus: dict[NonEmptyStr, GpuCount] = {}
    submit_rate: Annotated[float, Meta(ge=MIN_SUBMIT_RATE, le=MAX_SUBMIT_RATE)] | None = None
    burst: Annotated[int, Meta(ge=1, le=MAX_COUNT)] | None = None
    budget_usd: Usd | None = None
    budget_period_s: Annotated[float, Meta(gt=0, le=MAX_PERIOD_S)] = 86_400.0


UNLIMITED: Final = Quota()


class Tenant(Struct, frozen=True, omit_defaults=True, forbid_unknown_fields=True):
    """A tenant's weight in fair share and its limits.

    ``weight`` (1e-6 to 1e6) is its share of contended capacity relative to other tenants at the
    same priority level; ``quota`` limits the tenant as a whole; ``namespaces`` may set tighter
    limits for some of its namespaces (they also count against the tenant's quota). The id and
    the namespaces are identifiers (``IDENTIFIER_PATTERN``).
    """

    id: Identifier
    weight: Annotated[float, Meta(ge=1e-6, le=1_000_000)] = 1.0
    quota: Quota = UNLIMITED
    namespaces: dict[Identifier, Quota] = {}


class PriorityGuard(
    Struct, frozen=True, kw_only=True, omit_defaults=True, forbid_unknown_fields=True
):
    """The opt-in starvation guard: each level named in ``min_share`` gets at least that
    fraction of the last ``window`` dispatches while it has jobs queued, even if higher levels
    are backlogged (the one configured exception to strict priority, I3)."""

    min_share: dict[Priority, Annotated[float, Meta(gt=0, le=0.5)]] = {}
    window: Annotated[int, Meta(ge=10, le=1_000_000)] = 1000


# ---------------------------------------------------------------------------------------------
# Time-ordered ids (UUIDv7, RFC 9562): 48 bits of Unix milliseconds, a 12-bit counter that keeps
# ids monotonic within a millisecond in this process, and 62 random bits.

_id_state: list[Any] = [0, 0, ""]  # last millisecond, counter, the text of that millisecond
# A private generator seeded from the OS (and again in a forked child): fast, unaffected by
# random.seed() in user code, and never shared by two processes.
_id_random: Final = _random.Random(_os.urandom(16))
_os.register_at_fork(after_in_child=lambda: _id_random.seed(_os.urandom(16)))


def new_job_id() -> str:
    """A new UUIDv7 string; ids sort by creation time."""
    ms = _time.time_ns() // 1_000_000
    # No lock: two threads in the same millisecond may share (ms, counter) and order loosely;
    # the 62 random bits keep their ids apart.
    last_ms, counter, prefix = _id_state
    if ms <= last_ms:
        ms = last_ms
        counter += 1
        if counter > 0xFFF:  # 4096 ids in one millisecond: borrow the next millisecond
            ms += 1
            counter = 0
    else:
        counter = 0
    if ms != last_ms:  # 48 bits of milliseconds, then the version nibble
        h = f"{ms:012x}"
        prefix = _id_state[2] = f"{h[:8]}-{h[8:]}-7"
    _id_state[0] = ms
    _id_state[1] = counter
    rand = _id_random.getrandbits(62) | (1 << 63)  # the variant bits (0b10), then 62 random
    return f"{prefix}{counter:03x}-{rand >> 48:04x}-{rand & 0xFFFFFFFFFFFF:012x}"


_UTC: Final = _dt.UTC


def utc_now() -> _dt.datetime:
    """The current time, timezone-aware UTC."""
    return _dt.datetime.now(_UTC)


class Job(Struct, frozen=True, kw_only=True, gc=False, omit_defaults=True):
    """A unit of work and its state.

    Build one with the fields above the line; the scheduler fills in the rest (a submitted job
    that sets one of those is refused). ``kind``, ``tenant_id`` and ``namespace`` are
    identifiers (``IDENTIFIER_PATTERN``). ``id`` is a time-ordered UUIDv7 string assigned when
    the Job is built (you may pass your own). ``error`` is the last attempt's error;
    ``attempts`` keeps every run.
    """

    kind: Identifier
    tenant_id: Identifier
    namespace: Identifier = "default"
    priority: Priority = Priority.BATCH
    payload: dict[str, Any] = {}
    resources: Resources = DEFAULT_RESOURCES
    constraints: Constraints = DEFAULT_CONSTRAINTS
    metadata: dict[str, Any] = {}
    tags: tuple[NonEmptyStr, ...] = ()
    id: NonEmptyStr = field(default_factory=new_job_id)
    created_at: AwareDatetime = field(default_factory=utc_now)
    # ---- set by the scheduler ----
    status: Status = Status.PENDING
    backend: str | None = None
    pool: str | None = None
    attempt: NonNegInt = 0
    attempts: tuple[Attempt, ...] = ()
    result: Any = None
    error: JobError | None = None
    waiting_reason: str | None = None
    cancel_reason: str | None = None
    retry_of: str | None = None
    submitted_at: AwareDatetime | None = None
    queued_at: AwareDatetime | None = None
    started_at: AwareDatetime | None = None
    finished_at: AwareDatetime | None = None
    next_attempt_at: AwareDatetime | None = None
    progress: Progress | None = None
    estimated_cost_usd: float | None = None
    cost_usd: float = 0.0
    #: True on what a submit returns when the job was a duplicate of this one (its
    #: ``constraints.unique_key`` was held): this job, not a new one. Never stored.
    duplicate: bool = False
    #: Who canceled or retried it, and when (``Audit``), oldest first.
    audit: tuple[Audit, ...] = ()

    @property
    def is_terminal(self) -> bool:
        """True once the job succeeded, failed, timed out or was canceled."""
        return self.status in TERMINAL_STATUSES


# One reused encoder and decoder per type: the edge of the system (submit, HTTP, stores).
json_encoder: Final = msgspec.json.Encoder()
job_decoder: Final = msgspec.json.Decoder(Job)
