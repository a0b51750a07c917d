"""The core is pure (DESIGN.md, layer 1): nothing under ``nsai_work/core`` imports I/O, clocks,
threads, processes or randomness, nor the engine, backends, stores or telemetry. Checked on the
source with ``ast`` (relative imports resolved to ``nsai_work.*``), so a lazy import inside a
function is caught too."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import nsai_work.core

CORE_DIR = Path(nsai_work.core.__file__).resolve().parent
CORE_PACKAGE = "nsai_work.core"
FORBIDDEN_STDLIB = {"asyncio", "time", "os", "socket", "random", "threading", "subprocess"}
ALLOWED_OWN = {"nsai_work._ir", "nsai_work._errors", "nsai_work._stats"}
#: Modules an import of the core must not load (``os``, ``time`` and ``random`` are loaded by
#: the interpreter or by the IR's id generation, outside the core).
FORBIDDEN_IO_AT_IMPORT = {"asyncio", "threading", "socket", "subprocess", "concurrent"}
#: Calls that read a clock, whatever module they come from (datetime.now(), time.monotonic()).
CLOCK_CALLS = {"now", "utcnow", "today", "time_ns", "monotonic", "perf_counter"}


def core_files() -> list[Path]:
    return sorted(CORE_DIR.rglob("*.py"))


def module_of(path: Path) -> str:
    parts = path.relative_to(CORE_DIR).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join((CORE_PACKAGE, *parts))


def imported_modules(source: str, module: str, *, is_package: bool) -> Iterator[str]:
    """Every module a source imports, absolute (``from . import x`` yields ``pkg.x``)."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                if node.level > 1:
                    base_parts = base_parts[: -(node.level - 1)]
                base = ".".join(base_parts)
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            yield target
            for alias in node.names:  # `from .. import engine` imports nsai_work.engine
                yield f"{target}.{alias.name}"


def violations(source: str, module: str, *, is_package: bool = False) -> list[str]:
    """What makes this source impure, as readable lines (empty when it is pure)."""
    found = []
    for name in imported_modules(source, module, is_package=is_package):
        top = name.split(".")[0]
        if top in FORBIDDEN_STDLIB or top in {"importlib", "multiprocessing", "concurrent"}:
            found.append(f"imports {name}")
        elif top == "nsai_work":
            own = name == CORE_PACKAGE or name.startswith(CORE_PACKAGE + ".")
            allowed = any(name == a or name.startswith(a + ".") for a in ALLOWED_OWN)
            # `from .. import _ir` yields both "nsai_work" and "nsai_work._ir": the bare package
            # is only the parent of what is named.
            if not (own or allowed or name == "nsai_work"):
                found.append(f"imports {name}")
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in CLOCK_CALLS:
                found.append(f"calls {name}() at line {node.lineno}")
            if name == "__import__":
                found.append(f"calls __import__ at line {node.lineno}")
    return found


def test_the_core_has_source_files() -> None:
    names = {p.name for p in core_files()}
    assert {"__init__.py", "_core.py", "_queues.py", "_capacity.py", "_retry.py"} <= names


@pytest.mark.parametrize("path", core_files(), ids=lambda p: p.name)
def test_core_module_is_pure(path: Path) -> None:
    module = module_of(path)
    found = violations(path.read_text(), module, is_package=path.name == "__init__.py")
    assert found == [], f"{module} is not pure: {found}"


def test_importing_the_core_loads_no_engine_and_no_io() -> None:
    """``import nsai_work.core`` by itself (in a fresh interpreter, with the package's own
    ``__init__`` left out, as when it is lazy) loads none of the engine, stores, backends or
    telemetry, nor asyncio, threads, sockets or processes."""
    code = textwrap.dedent(
        f"""
        import sys, types
        package = types.ModuleType("nsai_work")
        package.__path__ = [{str(CORE_DIR.parent)!r}]
        sys.modules["nsai_work"] = package
        import nsai_work.core
        print("\\n".join(sorted(sys.modules)))
        """
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    own = [
        name
        for name in loaded
        if name.startswith("nsai_work.")
        and name.split(".")[1] in {"engine", "stores", "backends", "telemetry", "server", "cli"}
    ]
    io = [name for name in loaded if name.split(".")[0] in FORBIDDEN_IO_AT_IMPORT]
    assert own == [], f"import nsai_work.core loads {own}"
    assert io == [], f"import nsai_work.core loads {io}"
    assert "nsai_work.core._core" in loaded


def test_relative_imports_resolve_to_nsai_work() -> None:
    source = (CORE_DIR / "_core.py").read_text()
    seen = set(imported_modules(source, "nsai_work.core._core", is_package=False))
    assert "nsai_work._ir" in seen
    assert "nsai_work.core._queues" in seen
    init = (CORE_DIR / "__init__.py").read_text()
    assert "nsai_work.core._core" in set(imported_modules(init, CORE_PACKAGE, is_package=True))


@pytest.mark.parametrize(
    "source",
    [
        "import time",
        "import os.path",
        "from asyncio import sleep",
        "import random as r",
        "from socket import socket",
        "import threading",
        "import subprocess",
        "from .. import engine",
        "from ..engine import Scheduler",
        "from ..backends.mock import MockBackend",
        "from ..stores import memory",
        "from nsai_work.telemetry import execute",
        "def later():\n    import time\n    return time.monotonic()",
        "import datetime\nstamp = datetime.datetime.now()",
    ],
)
def test_the_checker_catches_impure_sources(source: str) -> None:
    assert violations(source, "nsai_work.core._x") != []


@pytest.mark.parametrize(
    "source",
    [
        "from .._ir import Job",
        "from .. import _errors",
        "from .._stats import Stats",
        "from ._queues import Entry",
        "from . import _retry",
        "import datetime\nwhen = datetime.datetime.fromtimestamp(0.0)",
        "from heapq import heappush",
        "import msgspec",
    ],
)
def test_the_checker_allows_pure_sources(source: str) -> None:
    assert violations(source, "nsai_work.core._x") == []


def test_importing_the_core_loads_the_core_alone() -> None:
    """`import nsai_work.core` loads the IR and the core, not the engine, asyncio or backends
    (the package's own `__init__` loads those on first use)."""
    script = (
        "import sys, nsai_work.core\n"
        "print(' '.join(sorted(m for m in sys.modules if m.startswith('nsai_work'))))\n"
        "print('asyncio' in sys.modules)\n"
    )
    found = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout.split("\n")
    loaded = set(found[0].split())
    outside_core = {m for m in loaded if not m.startswith(CORE_PACKAGE)}
    assert outside_core <= {
        "nsai_work",
        "nsai_work._clock",
        "nsai_work._errors",
        "nsai_work._handlers",
        "nsai_work._ir",
        "nsai_work._job_rules",
        "nsai_work._stats",
        "nsai_work._validate",
    }, outside_core
    assert f"{CORE_PACKAGE}._core" in loaded
    assert found[1] == "False"


def test_the_package_exports_every_name_it_lists_lazily_or_not() -> None:
    import nsai_work as work

    for name in work.__all__:
        assert getattr(work, name) is not None, name
    assert set(work.__all__) <= set(dir(work))
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        work.nope  # type: ignore[attr-defined]  # noqa: B018
