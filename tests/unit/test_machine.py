"""Machine discovery: cores, memory, and GPUs from nvidia-smi (a real executable on PATH)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from nsai_work.backends import LocalBackend
from nsai_work.backends._machine import gpu_model, machine_gpus, parse_gpu_names

SMI_OUTPUT = (
    "NVIDIA A100-SXM4-80GB\nNVIDIA A100-SXM4-80GB\nNVIDIA L4\nTesla T4\nNVIDIA RTX 6000 Ada\n"
)


def test_product_names_map_to_the_models_jobs_ask_for() -> None:
    assert gpu_model("NVIDIA A100-SXM4-80GB") == "A100"
    assert gpu_model("NVIDIA H100 80GB HBM3") == "H100"
    assert gpu_model("Tesla T4") == "T4"
    assert gpu_model("NVIDIA L40S") == "L40S"
    assert gpu_model("NVIDIA RTX 6000 Ada") == "RTX 6000 Ada"
    assert parse_gpu_names(SMI_OUTPUT) == {"A100": 2, "L4": 1, "T4": 1, "RTX 6000 Ada": 1}


def test_gpus_are_discovered_with_nvidia_smi_when_present(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    smi = tmp_path / "nvidia-smi"
    smi.write_text(f"#!/bin/sh\nprintf '{SMI_OUTPUT}'\n")
    smi.chmod(smi.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    machine_gpus.cache_clear()
    try:
        found = machine_gpus()
        assert found["A100"] == 2
        pools = {p.name: p for p in LocalBackend().pools()}
        assert pools["local:threads"].gpus["A100"] == 2
        assert LocalBackend(gpus={}).pools()[0].gpus == {}  # declared beats discovered
    finally:
        machine_gpus.cache_clear()


def test_no_nvidia_smi_means_no_gpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    machine_gpus.cache_clear()
    try:
        assert machine_gpus() == {}
    finally:
        machine_gpus.cache_clear()


def test_a_failing_nvidia_smi_means_no_gpus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed' >&2\nexit 9\n")
    smi.chmod(smi.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", str(tmp_path))
    machine_gpus.cache_clear()
    try:
        assert machine_gpus() == {}
    finally:
        machine_gpus.cache_clear()
