"""Data parallelism over every device, through sharding annotations.

Training steps stay ordinary jitted functions of ``(state, batch)``. Placing the state
replicated and the batch split along its first axis over a 1-d ``"data"`` mesh is enough:
XLA partitions the step, all-reduces the gradients and computes BatchNorm statistics over the
whole (global) batch, so the result equals one device's up to float summation order. With
one device every function here is a plain ``device_put``.

With several processes (:mod:`mmc_jax.runtime.distributed`) the mesh spans every process's
devices. Each process holds the same host data (the same global batch, in the same order) and
places only its own rows on its devices, so the global batch, the gradients and the BatchNorm
statistics are those of one process with all the devices.
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
    """A 1-d mesh over ``devices`` (default: every device of every process) with axis
    ``"data"``."""
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicate(tree: Any, mesh: Mesh) -> Any:
    """``tree`` copied to every device of ``mesh`` (parameters, optimizer state, keys)."""
    return place(tree, NamedSharding(mesh, P()))


def place(tree: Any, sharding: Any) -> Any:
    """``jax.device_put(tree, sharding)`` for a sharding (or PyTree of them) that may span
    other processes' devices: every process passes the same (host or local) values and puts
    only the parts its own devices hold."""
    if not _spans_processes(sharding):
        return jax.device_put(tree, sharding)
    if isinstance(sharding, jax.sharding.Sharding):
        sharding = jax.tree.map(lambda _: sharding, tree)

    def put(leaf, where):
        if isinstance(leaf, jax.Array) and leaf.sharding == where:
            return leaf
        host = np.asarray(jax.device_get(leaf))
        return jax.make_array_from_callback(host.shape, where, lambda index: host[index])

    return jax.tree.map(put, tree, sharding)


def _spans_processes(sharding: Any) -> bool:
    """Whether a sharding (or any in a PyTree of them) places data on other processes."""
    if jax.process_count() == 1:
        return False
    leaves = jax.tree.leaves(sharding, is_leaf=lambda x: isinstance(x, jax.sharding.Sharding))
    return any(not s.is_fully_addressable for s in leaves)


def local(tree: Any) -> Any:
    """``tree`` with every array held whole by this process's first device: what a loop over
    the mesh hands back to code that runs on one device (stacking θ_C with a fine-tuned model
    into a path, say). A replicated array gives its own copy, a split one is gathered."""
    device = jax.local_devices()[0]

    def own(leaf):
        if not isinstance(leaf, jax.Array) or len(leaf.sharding.device_set) == 1:
            return leaf
        if leaf.is_fully_replicated:
            return jax.device_put(leaf.addressable_data(0), device)
        return jax.device_put(fetch(leaf), device)

    return jax.tree.map(own, tree)


def fetch(tree: Any) -> Any:
    """``tree`` as host (numpy) arrays, whole, in every process: a leaf split over other
    processes' devices is gathered from them."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    from jax.experimental import multihost_utils

    def get(leaf):
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            if leaf.is_fully_replicated:
                return np.asarray(leaf.addressable_data(0))
            return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))
        return jax.device_get(leaf)

    return jax.tree.map(get, tree)


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
        queue.append(place(batch, sharding(batch) if callable(sharding) else sharding))
        if len(queue) > size:
            yield queue.popleft()
    while queue:
        yield queue.popleft()


def shard_batches(batches: Iterable[Any], mesh: Mesh, size: int = 2) -> Iterator[Any]:
    """Moves batches to the mesh, split along their first axis, ``size`` batches ahead of
    use (transfers overlap the computation on the previous batch)."""
    return prefetch_to_device(batches, size, lambda batch: batch_sharding(batch, mesh))


__all__ = [
    "DATA_AXIS",
    "batch_sharding",
    "data_mesh",
    "fetch",
    "local",
    "place",
    "replicate",
    "shard_batches",
]
