"""What this machine offers: cores, memory and GPUs (by type, via ``nvidia-smi`` when present).

Discovery runs once per process (the answer is cached) and never fails: a missing or broken
``nvidia-smi`` means no GPUs. Declared pools (``Scheduler(pools=...)``) override what is found.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from typing import Final

__all__ = ["gpu_model", "machine_cpu", "machine_gpus", "machine_memory_mb", "parse_gpu_names"]

#: Model names recognised in nvidia-smi's product names, most specific first.
_MODELS: Final = (
    "GH200",
    "H200",
    "H100",
    "A100",
    "A10G",
    "A10",
    "A40",
    "A30",
    "L40S",
    "L40",
    "L4",
    "V100",
    "T4",
    "P100",
)
_MODEL_RE: Final = re.compile(r"\b(" + "|".join(_MODELS) + r")\b")


def machine_cpu() -> float:
    """Cores this process may use."""
    try:
        return float(len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return float(os.cpu_count() or 1)


def machine_memory_mb() -> int:
    """Physical memory in MB."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1024 * 1024)
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return 1024


def gpu_model(product_name: str) -> str:
    """The model a job asks for (``A100``) in a product name (``NVIDIA A100-SXM4-80GB``); the
    product name itself (without the vendor) when the model is not recognised."""
    found = _MODEL_RE.search(product_name.replace("-", " "))
    if found:
        return found.group(1)
    return product_name.removeprefix("NVIDIA ").strip() or "GPU"


def parse_gpu_names(output: str) -> dict[str, int]:
    """GPUs by model from ``nvidia-smi --query-gpu=name --format=csv,noheader`` output."""
    gpus: dict[str, int] = {}
    for line in output.splitlines():
        name = line.strip()
        if name:
            model = gpu_model(name)
            gpus[model] = gpus.get(model, 0) + 1
    return gpus


@functools.cache
def machine_gpus() -> dict[str, int]:
    """GPUs by model, from ``nvidia-smi`` (empty when it is absent or fails)."""
    command = shutil.which("nvidia-smi")
    if command is None:
        return {}
    try:
        done = subprocess.run(
            [command, "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return {}
    if done.returncode != 0:
        return {}
    return parse_gpu_names(done.stdout)
