"""A Ray cluster's nodes as pools, and a job's Resources as Ray options.

Each alive node is one pool, ``ray:<node ip>:<first 12 hex digits of its node id>``:

- ``slots``: its CPUs (at least 1), plus ``prefetch``;
- ``cpu``: its CPUs (plus ``prefetch``), ``memory_mb``: its ``memory`` resource;
- ``gpus``: its ``GPU`` count under its accelerator type (``accelerator_type:<X>`` resource;
  ``GPU`` when it has none);
- ``custom``: its other resources (not ``node:*``, ``accelerator_type:*``, object store);
- ``labels``: ``ray.io/node-id``, ``ray.io/node-ip``, ``ray.io/accelerator-type`` and the node's
  own Ray labels;
- ``prices``: ``prices[<accelerator type>]``, else ``prices["cpu"]`` for a node without GPUs, else
  ``prices["default"]``, else the defaults.

A job asks Ray for exactly what it asks nsai-work (``num_cpus`` = ``resources.cpu`` or 0, and so
on) and is pinned to the node of its pool, so Ray's accounting and ours agree and nothing waits
in Ray's queues (with ``prefetch=0``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final

from .._ir import DEFAULT_PRICES, Pool, Prices, Resources

__all__ = ["NodePool", "node_pools", "ray_resources"]

_MIB: Final = 1024 * 1024
_NOT_CUSTOM: Final = frozenset({"CPU", "GPU", "memory", "object_store_memory"})
_SKIP_PREFIXES: Final = ("node:", "accelerator_type:")


class NodePool:
    """One alive node and the pool that stands for it."""

    __slots__ = ("ip", "node_id", "pool", "total")

    def __init__(self, node_id: str, ip: str, pool: Pool, total: dict[str, float]) -> None:
        self.node_id = node_id
        self.ip = ip
        self.pool = pool
        self.total = total  # its resources as Ray counts them (CPU, GPU, memory in bytes ...)


def node_pools(
    nodes: list[dict[str, Any]], *, prefetch: int, prices: Mapping[str, Prices]
) -> list[NodePool]:
    """The pools of the alive nodes of ``ray.nodes()``, in node id order."""
    found = []
    for node in sorted(nodes, key=lambda n: str(n.get("NodeID", ""))):
        if not node.get("Alive") or not node.get("NodeID"):
            continue
        node_id = str(node["NodeID"])
        ip = str(node.get("NodeManagerAddress") or "unknown")
        total = {str(k): float(v) for k, v in (node.get("Resources") or {}).items()}
        found.append(
            NodePool(node_id, ip, _pool(node_id, ip, total, node, prefetch, prices), total)
        )
    return found


def _pool(
    node_id: str,
    ip: str,
    total: dict[str, float],
    node: dict[str, Any],
    prefetch: int,
    prices: Mapping[str, Prices],
) -> Pool:
    cpus = total.get("CPU", 0.0)
    accelerators = sorted(k.split(":", 1)[1] for k in total if k.startswith("accelerator_type:"))
    gpu_count = int(total.get("GPU", 0.0))
    gpu_type = accelerators[0] if accelerators else "GPU"
    custom = {
        k: v
        for k, v in total.items()
        if k not in _NOT_CUSTOM and not k.startswith(_SKIP_PREFIXES) and v > 0
    }
    labels = {
        str(k): str(v) for k, v in (node.get("Labels") or {}).items() if k and isinstance(v, str)
    }
    labels.update({"ray.io/node-id": node_id, "ray.io/node-ip": ip})
    if accelerators:
        labels["ray.io/accelerator-type"] = gpu_type
    price_key = gpu_type if gpu_count else "cpu"
    return Pool(
        name=f"ray:{ip}:{node_id[:12]}",
        slots=max(1, math.floor(cpus)) + prefetch,
        cpu=cpus + prefetch,
        memory_mb=int(total["memory"] // _MIB) if "memory" in total else None,
        gpus={gpu_type: gpu_count} if gpu_count else {},
        custom=custom,
        labels=labels,
        prices=prices.get(price_key) or prices.get("default") or DEFAULT_PRICES,
    )


def ray_resources(resources: Resources) -> dict[str, Any]:
    """What a job with these Resources asks Ray for (task options; the Jobs API takes the same
    with an ``entrypoint_`` prefix)."""
    options: dict[str, Any] = {"num_cpus": resources.cpu or 0}
    if resources.memory_mb:
        options["memory"] = resources.memory_mb * _MIB
    gpus = resources.gpus_needed
    if gpus:
        options["num_gpus"] = gpus
        if resources.gpu is not None and resources.gpu != "GPU":
            options["accelerator_type"] = resources.gpu
    if resources.custom:
        options["resources"] = dict(resources.custom)
    return options
