"""Modal's GPU types, its published per-second prices, and a job's Resources as the options of
``Function.with_options``.

The price table (``MODAL_PRICES``) is Modal's pricing page (modal.com/pricing) turned from USD
per second into the USD per hour of ``work.Prices``, for Functions on Modal's default (no
region pinned, preemptible) placement. Modal's own site cannot be reached from where this was
written; the figures were read on ``PRICES_READ`` from copies of that page (see docs/modal.md,
"The price table", for which figure came from where, and how to update them). Override any of
them with ``ModalBackend(prices=work.Prices(...))``.
"""

from __future__ import annotations

import math
from typing import Any, Final

from .._errors import ValidationError
from .._ir import Job, Prices

__all__ = [
    "MAX_GPUS",
    "MODAL_GPU_TYPES",
    "MODAL_PRICES",
    "PER_SECOND",
    "PRICES_READ",
    "check_gpu",
    "modal_options",
]

#: When the per-second prices below were read (see the module docstring).
PRICES_READ: Final = "2026-12-07"

#: Modal's published prices in USD per second: per GPU by type, per physical CPU core, per GiB of
#: memory. ``H100!`` (an H100 never upgraded to an H200) and ``B200+`` (B200 or better, billed as a
#: B200) are priced as the type they name; ``A100`` is Modal's 40 GB A100. ``RTX-PRO-6000`` has
#: no figure here (none was found): it is priced at ``default_gpu_hour``, the dearest type's.
PER_SECOND: Final[dict[str, float]] = {
    "B200": 0.001736,
    "B200+": 0.001736,
    "H200": 0.001261,
    "H100": 0.001097,
    "H100!": 0.001097,
    "A100-80GB": 0.000694,
    "A100": 0.000583,
    "A100-40GB": 0.000583,
    "L40S": 0.000542,
    "A10": 0.000306,
    "L4": 0.000222,
    "T4": 0.000164,
    "cpu_core": 0.0000131,
    "memory_gib": 0.00000222,
}

#: The GPU types Modal offers (``gpu=`` of ``@app.function`` and ``with_options``), as Modal
#: spells them (modal.com/docs/guide/gpu).
MODAL_GPU_TYPES: Final = (
    "T4",
    "L4",
    "A10",
    "L40S",
    "A100",
    "A100-40GB",
    "A100-80GB",
    "RTX-PRO-6000",
    "H100",
    "H100!",
    "H200",
    "B200",
    "B200+",
)

#: The most GPUs of one type a container may have (A10: 4).
MAX_GPUS: Final = 8
_MAX_GPUS_BY_TYPE: Final = {"A10": 4}

_HOUR: Final = 3600.0
#: ``work.Prices`` prices memory per GB of 1024 MB (``memory_mb / 1024``): Modal's GiB.
MODAL_PRICES: Final = Prices(
    cpu_hour=round(PER_SECOND["cpu_core"] * _HOUR, 6),
    memory_gb_hour=round(PER_SECOND["memory_gib"] * _HOUR, 6),
    gpu_hour={
        gpu: round(PER_SECOND[gpu] * _HOUR, 6) for gpu in MODAL_GPU_TYPES if gpu in PER_SECOND
    },
    # A type without a figure (RTX-PRO-6000): the dearest type's price, so budgets stay safe.
    default_gpu_hour=round(
        max(PER_SECOND[gpu] for gpu in MODAL_GPU_TYPES if gpu in PER_SECOND) * _HOUR, 6
    ),
)

#: Modal's minimum CPU request (0.125 of a physical core).
_MIN_CPU: Final = 0.125


def check_gpu(job: Job) -> None:
    """Refuse at submit a GPU request Modal cannot serve: a type it does not offer (naming those
    it does), a GPU count without a type, more GPUs than one container may have."""
    resources = job.resources
    count = resources.gpus_needed
    if resources.gpu is None:
        if count:
            raise ValidationError(
                f"a Modal job asking for GPUs names their type: one of {list(MODAL_GPU_TYPES)}, "
                f"got gpu_count={count} and no gpu",
                path="$.resources.gpu",
            )
        return
    gpu = resources.gpu
    if gpu not in MODAL_GPU_TYPES:
        same = [t for t in MODAL_GPU_TYPES if t.lower() == gpu.lower()]
        hint = f" (write {same[0]!r})" if same else ""
        raise ValidationError(
            f"Modal does not offer GPU type {gpu!r}{hint}; it offers {list(MODAL_GPU_TYPES)}",
            path="$.resources.gpu",
        )
    most = _MAX_GPUS_BY_TYPE.get(gpu, MAX_GPUS)
    if count > most:
        raise ValidationError(
            f"a Modal container has at most {most} {gpu} GPUs, this job asks for {count}",
            path="$.resources.gpu_count",
        )


def gpu_string(job: Job) -> str | None:
    """Modal's GPU string for the job: ``"A100:2"``, ``"H100"``, or None (no GPU)."""
    gpu = job.resources.gpu
    if gpu is None:
        return None
    count = job.resources.gpus_needed or 1
    return gpu if count == 1 else f"{gpu}:{count}"


def modal_timeout_s(job: Job, grace_s: float) -> int | None:
    """Modal's own timeout for the call (whole seconds, at least 1): the job's timeout plus
    ``grace_s``, so nsai-work's timer ends the run first and Modal's is the backstop."""
    timeout_ms = job.resources.timeout_ms
    if timeout_ms is None:
        return None
    return max(1, math.ceil(timeout_ms / 1000.0 + grace_s))


def modal_options(job: Job, *, grace_s: float) -> dict[str, Any]:
    """The keyword arguments of ``Function.with_options`` for this job: its GPUs, CPU, memory
    and timeout, and ``retries=0`` (the job's retry policy decides, not Modal)."""
    r = job.resources
    options: dict[str, Any] = {"retries": 0}
    gpu = gpu_string(job)
    if gpu is not None:
        options["gpu"] = gpu
    if r.cpu:
        options["cpu"] = max(_MIN_CPU, float(r.cpu))
    if r.memory_mb:
        options["memory"] = int(r.memory_mb)
    timeout = modal_timeout_s(job, grace_s)
    if timeout is not None:
        options["timeout"] = timeout
    return options
