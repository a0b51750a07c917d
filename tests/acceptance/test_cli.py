"""The ``nsai-work`` command and ``make demo``'s module, run as subprocesses (the demo's runs
are in test_demo.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nsai_work

ROOT = Path(__file__).resolve().parents[2]


def _nsai_work() -> list[str]:
    script = Path(sys.executable).with_name("nsai-work")
    if script.exists():
        return [str(script)]
    found = shutil.which("nsai-work")
    return [found] if found else [sys.executable, "-m", "nsai_work.cli"]


def _run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_nsai_work(), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "120"},
    )


def test_version() -> None:
    done = _run("version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"nsai-work {nsai_work.__version__}"


def test_schema_prints_the_job_schema() -> None:
    done = _run("schema")
    assert done.returncode == 0, done.stderr
    schema = json.loads(done.stdout)
    job = schema["$defs"]["Job"]
    assert {"kind", "tenant_id"} <= set(job["required"])
    priorities = set(schema["$defs"]["Priority"]["enum"])
    assert priorities == {"realtime", "interactive", "batch", "offline"}


def test_schema_write(tmp_path: Path) -> None:
    done = _run("schema", "--write", str(tmp_path))
    assert done.returncode == 0, done.stderr
    written = (tmp_path / "job.schema.json").read_text()
    assert written == (ROOT / "schema/job.schema.json").read_text()


def test_unknown_command_fails_with_usage() -> None:
    done = _run("frobnicate")
    assert done.returncode == 2
    assert "usage: nsai-work" in done.stderr


def _python_m(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "120"},
    )


def test_python_m_nsai_work_runs_the_command() -> None:
    done = _python_m("nsai_work", "version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"nsai-work {nsai_work.__version__}"
    usage = _python_m("nsai_work")
    assert usage.returncode == 2
    assert "usage: nsai-work" in usage.stderr


def test_python_m_demo_help_prints_help_and_runs_nothing() -> None:
    done = _python_m("nsai_work.demo", "--help", timeout=30)
    assert done.returncode == 0, done.stderr
    assert "usage: python -m nsai_work.demo" in done.stdout
    assert "--quick" in done.stdout
    assert "nsai-work demo: summary" not in done.stdout  # nothing ran


def test_the_demo_module_and_the_cli_take_the_same_options() -> None:
    def options(help_text: str) -> set[str]:
        listed = help_text.partition("options:")[2]
        return {word.strip(",") for word in listed.split() if word.startswith("-")}

    module = _python_m("nsai_work.demo", "--help", timeout=30)
    command = _run("demo", "--help")
    assert command.returncode == 0, command.stderr
    assert options(module.stdout) == options(command.stdout)
    assert options(module.stdout) >= {"-h", "--help", "--quick", "--duration", "--resume"}


def test_python_m_demo_refuses_an_unknown_option() -> None:
    done = _python_m("nsai_work.demo", "--fast", timeout=30)
    assert done.returncode == 2
    assert "unrecognized arguments: --fast" in done.stderr
