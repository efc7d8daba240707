"""Data parallelism over all local devices, through sharding annotations.

Training steps stay ordinary jitted functions of ``(state, batch)``. Placing the state
replicated and the batch split along its first axis over a 1-d ``"data"`` mesh is enough:
XLA partitions the step, all-reduces the gradients and computes BatchNorm statistics over the
whole (global) batch, so the result equals one device's up to float summation order. With
one device every function here is a plain ``device_put``.
"""

from __future__ import annotations

import collections
from typing import Any, Iterable, Iterator, Optional, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

#: Name of the mesh axis batches are split along.
DATA_AXIS = "data"


def data_mesh(devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
    """A 1-d mesh over ``devices`` (default: all local devices) with axis ``"data"``."""
    devices = jax.local_devices() if devices is None else list(devices)
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicate(tree: Any, mesh: Mesh) -> Any:
    """``tree`` copied to every device of ``mesh`` (parameters, optimizer state, keys)."""
    return jax.device_put(tree, NamedSharding(mesh, P()))


def batch_sharding(batch: Any, mesh: Mesh, axis: int = 0) -> Any:
    """Per-leaf shardings that split each array's ``axis`` (the batch axis) over the mesh.

    A leaf whose batch axis does not divide evenly (e.g. the last, smaller batch of an
    epoch) is replicated instead: every device computes it whole, with the same result.
    """
    n = mesh.devices.size
    name = mesh.axis_names[0]

    def sharding(leaf):
        shape = np.shape(leaf)
        split = len(shape) > axis and shape[axis] % n == 0
        return NamedSharding(mesh, P(*[None] * axis, name) if split else P())

    return jax.tree.map(sharding, batch)


def prefetch_to_device(
    batches: Iterable[Any], size: int = 2, sharding: Any = None
) -> Iterator[Any]:
    """Keeps ``size`` batches in flight to the device while the current one is used.

    ``jax.device_put`` is asynchronous, so queuing transfers ahead overlaps them with the
    computation on the previous batch. ``sharding`` places each batch across devices: a
    sharding (or PyTree of them), or a function of the batch returning one (e.g.
    :func:`batch_sharding`).
    """
    queue = collections.deque()
    for batch in batches:
        queue.append(jax.device_put(batch, sharding(batch) if callable(sharding) else sharding))
        if len(queue) > size:
            yield queue.popleft()
    while queue:
        yield queue.popleft()


def shard_batches(batches: Iterable[Any], mesh: Mesh, size: int = 2) -> Iterator[Any]:
    """Moves batches to the mesh, split along their first axis, ``size`` batches ahead of
    use (transfers overlap the computation on the previous batch)."""
    return prefetch_to_device(batches, size, lambda batch: batch_sharding(batch, mesh))


__all__ = ["DATA_AXIS", "batch_sharding", "data_mesh", "replicate", "shard_batches"]
