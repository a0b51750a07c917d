"""Fixtures of the integration tests: a Ray cluster for the whole session (tests/_ray.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests._ray import RayCluster, require_ray


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayCluster]:
    """A 2-CPU Ray head node on 127.0.0.1, this process connected to it."""
    require_ray()
    cluster = RayCluster(tmp_path_factory.mktemp("ray"))
    try:
        cluster.start_head()
        yield cluster
    finally:
        cluster.stop()
