"""Every python block of the README and of docs/ runs as written, each in a fresh interpreter,
and prints what the ```text block after it says. A block that reads ``NSAI_WORK_PG_URL`` gets
the URL of a fresh database of the test cluster."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ._markdown import Example, examples

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
EXAMPLES = [example for document in DOCUMENTS for example in examples(document)]


@pytest.mark.parametrize("document", [*DOCUMENTS, ROOT / "CHANGELOG.md"], ids=lambda p: p.name)
def test_no_document_holds_a_merge_conflict(document: Path) -> None:
    markers = [
        number
        for number, line in enumerate(document.read_text().splitlines(), 1)
        if line.startswith(("<<<<<<< ", ">>>>>>> ")) or line == "======="
    ]
    assert not markers, f"{document.name}: merge conflict markers at lines {markers}"


def test_the_readme_has_the_seed_examples() -> None:
    readme = [e for e in EXAMPLES if e.source.name == "README.md"]
    assert len(readme) >= 9
    joined = "\n".join(e.code for e in readme)
    for needle in (
        '"calculator"',
        'args": {"a": 2, "b": 2}',
        'gpu="A100"',
        "RetryPolicy(",
        '"echo"',
        "Mock.configure",
        "class CustomBackend",
        "work.telemetry.attach(",
        'work.list("customer-123"',
    ):
        assert needle in joined, needle


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.name for e in EXAMPLES])
def test_example_runs_as_written(
    example: Example, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if "NSAI_WORK_PG_URL" in example.code:  # a PostgreSQL example: a fresh database of its own
        env["NSAI_WORK_PG_URL"] = request.getfixturevalue("postgres_url")
    done = subprocess.run(
        [sys.executable, "-c", example.code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, f"{example.name} failed:\n{done.stderr}"
    if example.expected is not None:
        got = [line.rstrip() for line in done.stdout.strip().splitlines()]
        want = [line.rstrip() for line in example.expected.strip().splitlines()]
        assert got == want, f"{example.name} printed:\n{done.stdout}\nstderr:\n{done.stderr}"
