"""Shared fixtures: unique handler kinds and tools that are unregistered after each test, the
mock backend's process-wide state reset, ``arun`` to drive the async engine from sync tests
(pytest-asyncio is not used), and a real PostgreSQL: ``postgres_cluster`` (one throwaway
cluster for the session, started by the first test that asks) and ``postgres_url`` (a fresh
database per test)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import pytest

import nsai_work as work
from tests._postgres import PostgresCluster, PostgresUnavailableError
from tests._ray import RAY_ENV

# A Ray cluster that a test or a docs example starts (ray.init) writes no auth token to the home
# directory, and reports no usage stats (tests/_ray.py).
os.environ.update(RAY_ENV)

T = TypeVar("T")


def unique(prefix: str = "t") -> str:
    """A name no other test uses."""
    return f"{prefix}.{uuid.uuid4().hex[:12]}"


@pytest.fixture
def handlers() -> Iterator[Callable[..., str]]:
    """``kind = handlers(fn)`` registers ``fn`` under a fresh kind (or ``kind=...``); every kind
    registered this way is unregistered after the test."""
    kinds: list[str] = []

    def register(fn: Callable[..., Any], *, kind: str | None = None) -> str:
        kind = kind or unique()
        work.register_handler(kind, fn)
        kinds.append(kind)
        return kind

    yield register
    for kind in kinds:
        with contextlib.suppress(work.NotFoundError):
            work.unregister_handler(kind)


@pytest.fixture
def tools() -> Iterator[Callable[..., str]]:
    """``name = tools(fn, parameters=None)`` registers a tool under a fresh name in
    ``work.altar``; unregistered after the test."""
    names: list[str] = []

    def register(fn: Callable[..., Any], *, parameters: dict[str, Any] | None = None) -> str:
        name = unique("tool")
        work.altar.register(name, f"test tool {name}", parameters, fn)
        names.append(name)
        return name

    yield register
    for name in names:
        with contextlib.suppress(work.NotFoundError):
            work.altar.unregister(name)


@pytest.fixture(autouse=True)
def _reset_mock() -> Iterator[None]:
    """The mock backend's configuration is process-wide: every test starts and ends clean."""
    work.backends.Mock.reset()
    yield
    work.backends.Mock.reset()


@pytest.fixture
def arun() -> Callable[[Coroutine[Any, Any, T]], T]:
    """Run a coroutine to completion on a fresh loop (with a safety timeout)."""

    def run(coroutine: Coroutine[Any, Any, T]) -> T:
        async def guarded() -> T:
            return await asyncio.wait_for(coroutine, 30)

        return asyncio.run(guarded())

    return run


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """One throwaway PostgreSQL cluster for the whole session (tests/_postgres.py), on
    127.0.0.1 inside the test's network namespace, with stock durability. Started by the first
    test that asks for it, stopped and deleted at the end. Where PostgreSQL cannot run at all it
    skips, naming why, and under ``CI=true`` it fails instead."""
    try:
        cluster = PostgresCluster()
    except PostgresUnavailableError as e:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI needs PostgreSQL: {e}", pytrace=False)
        pytest.skip(str(e))
    with cluster:
        yield cluster


@pytest.fixture
def postgres_url(postgres_cluster: PostgresCluster) -> Iterator[str]:
    """The URL of a fresh, empty database of this test's own, dropped afterwards. A test that
    restarts the cluster shares it with every other test: restart() keeps the data and the
    port, so the other tests' URLs stay valid."""
    url = postgres_cluster.create_database()
    yield url
    postgres_cluster.drop_database(url.rsplit("/", 1)[1])
