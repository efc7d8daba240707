"""Loss and accuracy at many points of a path, on several counterfactual conditions, in one
jitted call.

For every ``t``: build the model at ``path(t)``, settle its BatchNorm statistics once (by the
chosen policy, on clean training batches), then evaluate every condition with those
statistics. The paper's code instead loops over points in Python and re-estimates the
statistics for each condition. The K points are computed by one of three strategies:

* ``"vmap"`` (default on GPU/TPU): points vectorized, ``chunk_size`` at a time;
* ``"map"`` (default on CPU, where vmapped convolutions are slow): ``lax.map`` over points,
  ``chunk_size`` of them vectorized together (1 by default);
* ``"shard_map"``: points split across a 1-d device mesh, each device mapping its share.

With ``"vmap"`` and ``"map"`` on several devices the evaluation batches are split across
them instead (data parallel; BatchNorm statistics are still those of the whole batch).
Unless ``chunk_size`` is given, the number of points vectorized together is the largest that
keeps XLA's working memory within ``memory_budget`` (default: half the device's memory), read
from the compiled program, so K = 61 points of a full-width model fit a 24 GiB machine.

BatchNorm policies (``bn``):

* ``"interpolate"``: the interpolated running statistics, as they are;
* ``"interpolate_ema"`` (the paper code's default): interpolated statistics, then a
  train-mode pass over the BN batches updating them by EMA (the model's own BN momentum,
  0.1 in PyTorch terms), without reset;
* ``"recompute"``: statistics reset and recomputed exactly as the cumulative average of
  per-batch statistics over the BN batches (PyTorch's ``momentum=None``);
* ``"repair"`` (Jordan et al. 2023, :mod:`mmc_jax.connectivity.repair`): interpolated
  statistics, and every convolution's and dense layer's channels rescaled to the
  interpolation of the endpoints' activation mean and standard deviation, measured on the BN
  batches; for models with BatchNorm, LayerNorm or no normalisation. Needs a path that names
  its anchor models (``anchors()`` and ``weights(t)``, as every path of the library does).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import inspect
import io
import os
import pathlib
import shutil
from typing import Any, Callable, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from mmc_jax.connectivity import barrier, repair
from mmc_jax.data import CONDITIONS, Dataset, check_condition, check_random_from, clean_inputs
from mmc_jax.data.batching import sample_batches, stack_batches
from mmc_jax.data.cues import Cue
from mmc_jax.metrics import eval_step
from mmc_jax.models.nnx_bridge import accepts_nnx
from mmc_jax.paths import Path
from mmc_jax.reporting import files as mmc_io
from mmc_jax.runtime import distributed, parallel, stopping
from mmc_jax.runtime.errors import InputError

STRATEGIES = ("auto", "vmap", "map", "shard_map")
BN_POLICIES = ("interpolate", "interpolate_ema", "recompute", "repair")


def resolve_strategy(strategy: str) -> str:
    """``"auto"`` → ``"map"`` on CPU, ``"vmap"`` elsewhere."""
    if strategy not in STRATEGIES:
        raise InputError(f"unknown strategy {strategy!r}; choose from {', '.join(STRATEGIES)}")
    if strategy == "auto":
        return "map" if jax.default_backend() == "cpu" else "vmap"
    return strategy


@accepts_nnx
def bn_momentum(apply_fn: Callable, variables: Mapping, images: jax.Array) -> float:
    """The EMA momentum ``m`` of the model's BatchNorm (``new = m·old + (1 − m)·batch``),
    read off two train-mode passes; 0.9 for the library's models (PyTorch's 0.1), and for
    models without BatchNorm (where it is unused).

    An ``nnx.Module`` may stand for ``(apply_fn, variables)`` (:mod:`~mmc_jax.models.nnx_bridge`).
    """
    if not jax.tree.leaves(variables.get("batch_stats", {})):
        return 0.9
    return float(_momentum(_Static(apply_fn), variables, images))


class _Static:
    """A callable as a static jit argument, equal for equal callables (:func:`_callable_key`)."""

    def __init__(self, fn: Callable):
        self.fn, self.key = fn, _callable_key(fn)

    def __eq__(self, other):
        return isinstance(other, _Static) and self.key == other.key

    def __hash__(self):
        return hash(self.key)


@functools.partial(jax.jit, static_argnums=0)
def _momentum(apply_fn: _Static, variables: Mapping, images: jax.Array) -> jax.Array:
    def updated(fill):
        stats = jax.tree.map(lambda s: jnp.full_like(s, fill), variables["batch_stats"])
        _, out = apply_fn.fn(
            {**variables, "batch_stats": stats}, images, train=True, mutable=["batch_stats"]
        )
        return jax.tree.leaves(out["batch_stats"])[0].ravel()[0]

    return updated(1.0) - updated(0.0)


@functools.partial(jax.jit, static_argnums=0)
def _anchor_statistics(apply_fn: _Static, anchors, images: jax.Array) -> dict:
    return repair.anchor_statistics(apply_fn.fn, anchors, images)


@accepts_nnx
def settle_batch_stats(
    apply_fn: Callable, variables: Mapping, bn_images: jax.Array, policy: str, momentum: float = 0.9
) -> dict:
    """Variables with BatchNorm statistics set by ``policy`` (see the module docstring).

    An ``nnx.Module`` may stand for ``(apply_fn, variables)`` (:mod:`~mmc_jax.models.nnx_bridge`).

    Args:
      apply_fn: ``module.apply``.
      variables: ``{"params", "batch_stats"}`` of one path point.
      bn_images: normalized clean images ``[num_batches, batch, H, W, C]``.
      policy: one of :data:`BN_POLICIES` (``"repair"`` leaves the statistics interpolated;
        its correction is :func:`mmc_jax.connectivity.repair.repair`).
      momentum: the model's BN momentum (:func:`bn_momentum`), for ``"recompute"``.
    """
    if policy in ("interpolate", "repair") or not jax.tree.leaves(variables.get("batch_stats", {})):
        return variables

    def train_pass(stats, x):
        _, out = apply_fn(
            {**variables, "batch_stats": stats}, x, train=True, mutable=["batch_stats"]
        )
        return out["batch_stats"]

    if policy == "interpolate_ema":

        def ema(stats, x):
            return train_pass(stats, x), None

        stats, _ = jax.lax.scan(ema, variables["batch_stats"], bn_images)
        return {**variables, "batch_stats": stats}

    zeros = jax.tree.map(jnp.zeros_like, variables["batch_stats"])

    def accumulate(total, x):  # from zero, one update is (1 − m) · the batch's statistics
        return jax.tree.map(jnp.add, total, train_pass(zeros, x)), None

    total, _ = jax.lax.scan(accumulate, zeros, bn_images)
    scale = 1.0 / ((1.0 - momentum) * bn_images.shape[0])
    return {**variables, "batch_stats": jax.tree.map(lambda s: s * scale, total)}


@accepts_nnx
def condition_sums(
    apply_fn: Callable,
    variables: Mapping,
    batches: Mapping[str, jax.Array],
    cue: Cue,
    conditions: Sequence[str],
    key: jax.Array,
    pool: Optional[jax.Array] = None,
) -> jax.Array:
    """Summed loss and correct count per condition, ``[len(conditions), 2]``, eval mode.

    An ``nnx.Module`` may stand for ``(apply_fn, variables)`` (:mod:`~mmc_jax.models.nnx_bridge`).

    Scans ``training.eval_step``, the one evaluation kernel, over the stacked batches: batch
    ``i`` of condition ``c`` draws from ``data.condition_key(key, c, i)``, so every path
    point sees the same counterfactual images, and the same as ``training.evaluate``.
    """

    def body(total, inputs):
        i, batch = inputs
        out = eval_step(apply_fn, variables, batch, key, cue, conditions, i, pool)
        return total + jnp.stack(
            [jnp.stack([out[c]["loss"], out[c]["correct"]]) for c in conditions]
        ), None

    count = jax.tree.leaves(batches)[0].shape[0]
    total, _ = jax.lax.scan(body, jnp.zeros((len(conditions), 2)), (jnp.arange(count), batches))
    return total


@dataclasses.dataclass
class PathResult:
    """Metrics along a path: ``metrics[condition]["loss" | "acc"]`` are arrays over ``ts``."""

    ts: np.ndarray
    metrics: dict[str, dict[str, np.ndarray]]
    #: points vectorized together (per device for ``"shard_map"``).
    chunk_size: int = 1
    #: XLA working memory of the evaluation program per device, bytes (``None``: unknown).
    memory_bytes: Optional[int] = None

    def barriers(self, condition: str) -> dict[str, float]:
        """Loss and accuracy barriers of one condition."""
        m = self.metrics[condition]
        return {
            "loss": barrier.loss_barrier(self.ts, m["loss"]),
            "acc": barrier.accuracy_barrier(self.ts, m["acc"]),
        }

    def to_json(self, path_name: str = "linear") -> dict[str, Any]:
        """The ``results.json`` layout of ``experiments.connectivity``."""
        return {
            "path": path_name,
            "ts": [float(t) for t in self.ts],
            "conditions": {
                c: {
                    "acc": [float(v) for v in m["acc"]],
                    "loss": [float(v) for v in m["loss"]],
                    "barrier": self.barriers(c),
                    "integral": {k: barrier.trapezoid(self.ts, m[k]) for k in ("loss", "acc")},
                }
                for c, m in self.metrics.items()
            },
        }


def default_memory_budget(device: Optional[jax.Device] = None) -> int:
    """Half the memory of ``device`` (default: the first local device): its allocator's
    limit on GPU/TPU, the machine's physical memory on CPU."""
    device = jax.local_devices()[0] if device is None else device
    try:
        stats = device.memory_stats() or {}
    except Exception:  # some backends do not report memory
        stats = {}
    total = stats.get("bytes_limit") or os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return int(total) // 2


@dataclasses.dataclass
class CompiledEvaluation:
    """A path evaluation compiled for its inputs, not yet run: its chunk size and XLA working
    memory are known (:func:`compile_evaluation`)."""

    chunk_size: int
    #: XLA working memory per device, bytes (``None``: the backend does not report it).
    memory_bytes: Optional[int]
    _run: Callable[[Optional[jax.Array]], PathResult]

    def run(self, ts=None) -> PathResult:
        """Evaluates every point; one call of the compiled program. ``ts``: other points,
        as many as it was compiled for (default: those)."""
        return self._run(ts)


def evaluate_path(
    apply_fn: Callable,
    path: Path,
    ts,
    eval_set: Dataset,
    *,
    store=None,
    part_size: int = 64,
    progress: bool = False,
    shard: Optional[tuple[int, int]] = None,
    **kwargs,
) -> Optional[PathResult]:
    """Loss and accuracy at every ``t`` in ``ts`` on every condition, in one jitted call.

    Takes the arguments of :func:`compile_evaluation` and runs the result. With ``store``
    (a folder), the points are evaluated in parts of at most ``part_size`` (one compiled
    program, called once per part) and each part's metrics are saved there as it finishes:
    a rerun with the same ``store`` and points skips the saved parts, so a killed evaluation
    resumes (the caller keeps the store to one model, data and settings). ``progress``: a
    progress bar over the parts.

    SIGINT/SIGTERM (:mod:`mmc_jax.runtime.stopping`) during a part let it finish and be saved, then
    raise :class:`~mmc_jax.runtime.stopping.Interrupted` (``stopped after part k of n of the path
    evaluation; rerun the same command to continue``); the rerun resumes after that part.
    Without ``store`` nothing is saved along the way, and a signal raises at once (under
    :func:`mmc_jax.runtime.stopping.raise_on_signals`, as the entry points run).

    ``shard=(k, n)`` (with ``store``) evaluates and saves only the parts ``p`` with
    ``p % n == k`` and returns None: ``n`` processes, one per ``k``, share an evaluation's
    parts (work units, :mod:`mmc_jax.jobs`), and a last call without ``shard`` joins the
    saved parts. Each part is the same program on the same points, so the joined result
    equals one process's.
    """
    if store is None:
        if shard is not None:
            raise InputError("shard needs a store: the parts are shared through its files")
        return compile_evaluation(apply_fn, path, ts, eval_set, **kwargs).run()
    if part_size < 1:
        raise InputError(f"part_size must be positive, got {part_size}")
    ts = np.asarray(ts, np.float32)
    parts = _padded_parts(ts, part_size)
    store = _PartStore(store, parts.reshape(-1, *ts.shape[1:]))
    if shard is not None:
        k, n = shard
        mine = [p for p in range(len(parts)) if p % n == k]
        _evaluate_parts(apply_fn, path, ts, eval_set, kwargs, parts, store, progress, mine)
        return None
    return _evaluate_parts(apply_fn, path, ts, eval_set, kwargs, parts, store, progress)


def _padded_parts(ts: np.ndarray, part_size: int) -> np.ndarray:
    """The points as ``[parts, size, ...]``: as few parts as ``part_size`` allows, all of one
    size (so one compiled program runs them all), the last padded with copies of the last
    point."""
    count = -(-len(ts) // part_size)
    size = -(-len(ts) // count)
    padded = np.concatenate([ts, np.repeat(ts[-1:], count * size - len(ts), axis=0)])
    return padded.reshape(count, size, *ts.shape[1:])


def _evaluate_parts(
    apply_fn: Callable,
    path: Path,
    ts: np.ndarray,
    eval_set: Dataset,
    kwargs: dict,
    parts: np.ndarray,
    store: _PartStore,
    progress: bool,
    only: Optional[list[int]] = None,
) -> Optional[PathResult]:
    """:func:`evaluate_path` with a store: every part not saved in ``store`` is evaluated
    and saved, compiling the program at the first such part (none when all are saved), and
    the parts' metrics are joined for the points ``ts`` (the padding dropped). With
    ``only``, just those parts, and nothing is joined (None)."""
    from tqdm.auto import tqdm

    evaluation, metrics = None, []
    for p, points in enumerate(
        tqdm(parts, desc="points", unit="part", disable=not progress),
    ):
        if only is not None and p not in only:
            continue
        part = store.load(p)
        if part is None:
            if evaluation is None:  # a stop while compiling loses nothing: raised at once
                evaluation = compile_evaluation(apply_fn, path, points, eval_set, **kwargs)
            part = _run_part(evaluation, points, store, p, len(parts))
        metrics.append(part)
    if only is not None:
        return None
    joined = {
        c: {k: np.concatenate([part[c][k] for part in metrics])[: len(ts)] for k in ("loss", "acc")}
        for c in metrics[0]
    }
    return PathResult(
        ts.astype(np.float64),
        joined,
        evaluation.chunk_size if evaluation else 1,
        evaluation.memory_bytes if evaluation else None,
    )


def _run_part(
    evaluation: CompiledEvaluation, points: np.ndarray, store: _PartStore, p: int, count: int
) -> dict:
    """The metrics of part ``p`` (of ``count``), evaluated and saved in ``store``; a stop
    asked meanwhile waits for the save, then raises, so the rerun resumes after this part."""
    with stopping.requests() as stop:
        part = evaluation.run(points).metrics
        store.save(p, part)
        stop.raise_if_asked(f"after part {p + 1} of {count} of the path evaluation")
    return part


class _PartStore:
    """The saved parts of one evaluation: ``points.npy`` (all points; another set of points
    clears the folder) and ``part_<p>.npz`` per finished part."""

    def __init__(self, folder, points: np.ndarray):
        self.folder = pathlib.Path(folder)
        marker = self.folder / "points.npy"
        if marker.is_file():
            saved = np.load(marker)
            if saved.shape != points.shape or not np.array_equal(saved, points):
                distributed.on_main("parts cleared", shutil.rmtree, self.folder)
        if not marker.is_file():
            buffer = io.BytesIO()
            np.save(buffer, points)
            mmc_io.write_atomic(marker, buffer.getvalue())

    def load(self, p: int) -> Optional[dict]:
        file = self.folder / f"part_{p:05d}.npz"
        if not file.is_file():
            return None
        with np.load(file) as saved:
            metrics: dict = {}
            for name in saved.files:
                condition, metric = name.rsplit("/", 1)
                metrics.setdefault(condition, {})[metric] = saved[name]
        return metrics

    def save(self, p: int, metrics: dict) -> None:
        buffer = io.BytesIO()
        np.savez(buffer, **{f"{c}/{k}": v for c, m in metrics.items() for k, v in m.items()})
        mmc_io.write_atomic(self.folder / f"part_{p:05d}.npz", buffer.getvalue())


def compile_evaluation(
    apply_fn: Callable,
    path: Path,
    ts,
    eval_set: Dataset,
    *,
    cue: Optional[Cue] = None,
    conditions: Sequence[str] = CONDITIONS,
    bn: str = "recompute",
    bn_set: Optional[Dataset] = None,
    bn_batches: Optional[int] = 20,
    batch_size: int = 500,
    bn_batch_size: Optional[int] = None,
    bn_shuffle_seed: Optional[int] = None,
    random_from: str = "set",
    strategy: str = "auto",
    chunk_size: Optional[int] = None,
    memory_budget: Optional[int] = None,
    key: Optional[jax.Array] = None,
    redraw: bool = False,
    cue_proportion: float = 1.0,
    mesh: Optional[Mesh] = None,
) -> CompiledEvaluation:
    """The evaluation of every ``t`` in ``ts`` on every condition, compiled as one program
    whose chunk size fits ``memory_budget``; ``.run()`` gives the :class:`PathResult`.

    Args:
      apply_fn: ``module.apply`` of any Flax model with ``batch_stats``.
      path: a :class:`mmc_jax.paths.Path` over ``{"params", "batch_stats"}``.
      ts: the points, e.g. ``paths.grid(11)``.
      eval_set: clean evaluation images (the conditions are built from it on device).
      cue: the cue of the conditions (default ``eval_set.cue``).
      conditions: which of :data:`CONDITIONS`.
      bn: BatchNorm policy, one of :data:`BN_POLICIES`.
      bn_set: training data for the BN statistics (needed unless ``"interpolate"``); its cue
        is removed (``data.clean_inputs``), so the statistics are always those of clean data.
      bn_batches: how many batches of ``bn_set`` (``None``: all, the paper code's full pass).
      batch_size: batch size of the evaluation passes (and of the BN passes, by default).
      bn_batch_size: batch size of the BN passes (the paper's code: 128).
      bn_shuffle_seed: BN batches from a shuffled ``bn_set`` (``None``: dataset order); with
        ``bn="interpolate_ema"``, ``bn_batches=None``, ``bn_batch_size=128``: the code's pass.
      random_from: where ``randimg`` images and random domino cues come from, ``"set"`` (the
        whole ``eval_set``, the paper's code) or ``"batch"`` (see ``data.counterfactual``).
      strategy: one of :data:`STRATEGIES`.
      chunk_size: points vectorized together; default: as many as ``memory_budget`` allows,
        up to all of them for ``"vmap"`` and 1 for ``"map"``.
      memory_budget: bytes of XLA working memory per device the evaluation may use when
        choosing ``chunk_size`` (default :func:`default_memory_budget`).
      key: PRNG key of the random conditions (default ``PRNGKey(0)``); ``redraw``: new draws
        at every point (``key`` folded with ``t``, the paper's code), not the same everywhere.
      cue_proportion: fraction of each class cued in the cued conditions (``metrics.evaluate``).
      mesh: 1-d device mesh (default: all devices), over which ``"shard_map"`` splits the
        points and the other strategies the evaluation batches.

    Raises:
      InputError: for unknown names, or when one point alone exceeds ``memory_budget``.
    """
    strategy = resolve_strategy(strategy)
    conditions = tuple(check_condition(c) for c in conditions)
    bn_passes = _BatchNormPasses.checked(
        bn, path, bn_set, bn_batches, bn_batch_size or batch_size, bn_shuffle_seed
    )
    execution = _Execution.checked(strategy, chunk_size, memory_budget, mesh)
    use_pool = check_random_from(random_from) == "set"
    cue = eval_set.cue if cue is None else cue
    settings = _PointSettings(bn, cue, conditions, use_pool, len(eval_set), bool(redraw))
    ts = jnp.asarray(ts, jnp.float32)
    stacked = stack_batches(eval_set, batch_size, cue_proportion=cue_proportion)
    eval_batches = execution.place_data(stacked)
    bn_images = bn_passes.clean_images(eval_set.image_shape, execution)
    path = parallel.replicate(path, execution.mesh)
    momentum = jnp.float32(bn_passes.momentum(apply_fn, path, bn_images))
    anchor_stats = bn_passes.anchor_statistics(apply_fn, path, bn_images)
    key = jax.random.PRNGKey(0) if key is None else key
    args = (path, eval_batches, bn_images, momentum, key, anchor_stats)
    compiled, chunk, memory = _compile(apply_fn, settings, ts, args, execution)
    count = float(eval_batches["weight"].sum())
    program = _CompiledProgram(compiled, execution, args, ts, conditions, count, chunk, memory)
    return CompiledEvaluation(chunk, memory, program)


@dataclasses.dataclass(frozen=True, eq=False)
class _BatchNormPasses:
    """How every point's BatchNorm statistics are settled (:func:`settle_batch_stats`): the
    policy, and which clean batches of ``bn_set`` its passes and measurements run on."""

    policy: str
    bn_set: Optional[Dataset]
    batches: Optional[int]
    batch_size: int
    shuffle_seed: Optional[int]

    @classmethod
    def checked(
        cls,
        policy: str,
        path: Path,
        bn_set: Optional[Dataset],
        batches: Optional[int],
        batch_size: int,
        shuffle_seed: Optional[int],
    ) -> _BatchNormPasses:
        """The settings of a known ``policy`` that has what it needs: ``bn_set`` unless
        ``"interpolate"``, and for ``"repair"`` a path naming the models it interpolates."""
        if policy not in BN_POLICIES:
            raise InputError(f"unknown BN policy {policy!r}; choose from {', '.join(BN_POLICIES)}")
        if policy != "interpolate" and bn_set is None:
            raise InputError(f"BN policy {policy!r} needs bn_set (clean training data)")
        if policy == "repair" and not (hasattr(path, "anchors") and hasattr(path, "weights")):
            raise InputError(
                "BN policy 'repair' needs a path with anchors() and weights(t) "
                f"(the models it interpolates); {type(path).__name__} has none"
            )
        return cls(policy, bn_set, batches, batch_size, shuffle_seed)

    def clean_images(self, image_shape: tuple, execution: _Execution) -> jax.Array:
        """The BN batches ``[num_batches, batch, H, W, C]`` on the mesh
        (:meth:`_Execution.place_data`), ``bn_set``'s cue removed image by image so that the
        statistics are those of clean data; ``"interpolate"`` runs no BN pass and gets none."""
        if self.policy == "interpolate":
            return execution.place_data(np.zeros((0, 1, *image_shape), np.float32))
        images = execution.place_data(
            sample_batches(self.bn_set, self.batch_size, self.batches, self.shuffle_seed)
        )
        flat = images.reshape(-1, *images.shape[2:])
        return clean_inputs(self.bn_set.cue, flat).reshape(images.shape)

    def momentum(self, apply_fn: Callable, path: Path, bn_images: jax.Array) -> float:
        """The model's BN momentum (:func:`bn_momentum`), measured for ``"recompute"`` only,
        which needs it to undo the EMA's (1 − m) factor; 0.9 (unused) for the others."""
        if self.policy != "recompute":
            return 0.9
        return bn_momentum(apply_fn, path.endpoints()[0], bn_images[0])

    def anchor_statistics(self, apply_fn: Callable, path: Path, bn_images: jax.Array) -> dict:
        """For ``"repair"``, the anchors' activation statistics that its targets interpolate,
        measured once for every point; none for the others."""
        if self.policy != "repair":
            return {}
        return _anchor_statistics(_Static(apply_fn), path.anchors(), bn_images)


@dataclasses.dataclass(frozen=True)
class _Execution:
    """How the points are computed: the strategy (resolved), the chunk size asked for
    (``None``: fitted to ``budget``), the working-memory budget per device in bytes and the
    1-d mesh. Hashable and compared by value: part of the key of compiled programs."""

    strategy: str
    chunk_size: Optional[int]
    budget: int
    mesh: Mesh

    @classmethod
    def checked(
        cls,
        strategy: str,
        chunk_size: Optional[int],
        memory_budget: Optional[int],
        mesh: Optional[Mesh],
    ) -> _Execution:
        """The settings with their defaults filled in: every local device, and half the
        first device's memory (:func:`default_memory_budget`)."""
        if chunk_size is not None and chunk_size < 1:
            raise InputError(f"chunk_size must be positive, got {chunk_size}")
        mesh = parallel.data_mesh() if mesh is None else mesh
        budget = (
            default_memory_budget(mesh.devices.flat[0]) if memory_budget is None else memory_budget
        )
        return cls(strategy, chunk_size, budget, mesh)

    def place_data(self, tree):
        """Batches ``[num_batches, batch, ...]`` on the mesh: whole on every device for
        ``"shard_map"`` (which splits the points), else split along the batch axis."""
        if self.strategy == "shard_map":
            return parallel.replicate(tree, self.mesh)
        return parallel.place(tree, parallel.batch_sharding(tree, self.mesh, axis=1))

    def place_points(self, ts: jax.Array) -> jax.Array:
        """The points as the program takes them: as they are, or for ``"shard_map"`` padded
        (with copies of the last) to a multiple of the devices and split over them."""
        if self.strategy != "shard_map":
            return ts
        ts = jnp.concatenate([ts, jnp.repeat(ts[-1:], -ts.shape[0] % self.mesh.devices.size, 0)])
        return parallel.place(ts, jax.sharding.NamedSharding(self.mesh, P(self.mesh.axis_names[0])))

    def points_per_device(self, placed_ts: jax.Array) -> int:
        """How many of the placed points each device maps over."""
        return placed_ts.shape[0] // (self.mesh.devices.size if self.strategy == "shard_map" else 1)


@dataclasses.dataclass(frozen=True)
class _PointSettings:
    """What the evaluation of one point is traced with (:func:`_point`): the BN policy, the
    cue and conditions, whether random images and cues come from the whole evaluation set
    (``use_pool``) and its size. Hashable and compared by value (part of the key of compiled
    programs), unless the cue is not."""

    bn: str
    cue: Cue
    conditions: tuple
    use_pool: bool
    num_eval: int
    redraw: bool = False


@dataclasses.dataclass(frozen=True, eq=False)
class _CompiledProgram:
    """A compiled evaluation with the arguments it runs on: ``__call__`` evaluates points of
    the compiled shape and turns the summed metrics into a :class:`PathResult`."""

    compiled: Any
    execution: _Execution
    args: tuple
    ts: jax.Array
    conditions: tuple
    #: the evaluation set's total weight: sums over it become means.
    count: float
    chunk: int
    memory: Optional[int]

    def __call__(self, points=None) -> PathResult:
        points = self.ts if points is None else jnp.asarray(points, jnp.float32)
        if points.shape != self.ts.shape:
            raise InputError(f"compiled for points of shape {self.ts.shape}, got {points.shape}")
        out = self.compiled(self.execution.place_points(points), *self.args)
        sums = np.asarray(parallel.fetch(out)[: self.ts.shape[0]], np.float64) / self.count
        metrics = {
            c: {"loss": sums[:, i, 0], "acc": sums[:, i, 1]} for i, c in enumerate(self.conditions)
        }
        return PathResult(np.asarray(points, np.float64), metrics, self.chunk, self.memory)


def _working_bytes(compiled) -> Optional[int]:
    """XLA temporaries of a compiled program per device, if the backend reports them."""
    try:
        stats = compiled.memory_analysis()
    except Exception:
        return None
    return None if stats is None else int(stats.temp_size_in_bytes)


def _point(apply_fn: Callable, settings: _PointSettings) -> Callable:
    """The evaluation of one path point: BN statistics settled, then every condition."""

    def point(t, path, eval_batches, bn_images, momentum, key, anchor_stats):
        variables = settle_batch_stats(apply_fn, path(t), bn_images, settings.bn, momentum)
        fn = (
            apply_fn
            if settings.bn != "repair"
            else repair.repair(apply_fn, variables, bn_images, anchor_stats, path.weights(t))
        )
        if settings.redraw:  # the point's own draws, the same for the same t
            key = jax.random.fold_in(key, jax.lax.bitcast_convert_type(t, jnp.uint32))
        images = eval_batches["images"]
        pool = (
            images.reshape(-1, *images.shape[2:])[: settings.num_eval]
            if settings.use_pool
            else None
        )
        return condition_sums(
            fn, variables, eval_batches, settings.cue, settings.conditions, key, pool
        )

    return point


#: Compiled evaluations of this process, most recent last (see :func:`_compile`).
_COMPILED: collections.OrderedDict = collections.OrderedDict()
_COMPILED_MAX = 32


def _callable_key(fn: Callable):
    """A key equal for equal callables: a bound method by its (hashable) object and
    function, so ``model.apply`` of two equal modules shares compiled programs."""
    if inspect.ismethod(fn):
        try:
            hash(fn.__self__)
            return ("method", fn.__func__, fn.__self__)
        except TypeError:
            pass
    return fn


def _signature(tree) -> tuple:
    """Structure, shapes, dtypes and shardings of a PyTree of arrays."""
    leaves, treedef = jax.tree.flatten(tree)
    return treedef, tuple((np.shape(x), x.dtype, getattr(x, "sharding", None)) for x in leaves)


def _compile(
    apply_fn: Callable,
    settings: _PointSettings,
    ts: jax.Array,
    args: tuple,
    execution: _Execution,
) -> tuple[Any, int, Optional[int]]:
    """One program evaluating ``point(t, *args)`` for every t under the strategy.

    Returns ``(compiled, chunk, working bytes)``: ``compiled(execution.place_points(ts),
    *args)`` evaluates points ``ts`` of the compiled shape; the program's output has one row
    per t (and padding rows for ``"shard_map"``).

    Programs are kept per process, keyed on the model, the point's settings, the execution
    settings and the arguments' shapes, dtypes and shardings: evaluating another path of the
    same model on the same data reuses the program without tracing, lowering or compiling
    it again.
    """
    placed = execution.place_points(ts)
    cache_key = (_callable_key(apply_fn), settings, execution, _signature((placed, *args)))
    found = _cached_program(cache_key)
    if found is None:
        found = _fit_chunk(_point(apply_fn, settings), placed, args, execution)
        _keep_program(cache_key, found)
    return found


def _cached_program(cache_key) -> Optional[tuple]:
    """The kept ``(compiled, chunk, memory)`` of ``cache_key``, now the most recent, or
    ``None``; a key that cannot be hashed (an unhashable model or cue) finds nothing."""
    try:
        found = _COMPILED.get(cache_key)
    except TypeError:
        return None
    if found is not None:
        _COMPILED.move_to_end(cache_key)
    return found


def _keep_program(cache_key, compiled: tuple) -> None:
    """Keeps ``compiled`` under ``cache_key`` (the least recent beyond :data:`_COMPILED_MAX`
    dropped); nothing is kept under a key that cannot be hashed."""
    try:
        _COMPILED[cache_key] = compiled
    except TypeError:
        return
    while len(_COMPILED) > _COMPILED_MAX:
        _COMPILED.popitem(last=False)


def _fit_chunk(
    point: Callable, ts: jax.Array, args: tuple, execution: _Execution
) -> tuple[Any, int, Optional[int]]:
    """``(compiled, chunk, working bytes)`` of the program over the placed points ``ts``.

    With ``execution.chunk_size`` the chunk is that (at most the points per device);
    without, it starts at the strategy's default (every point for ``"vmap"``, 1 for
    ``"map"``) and shrinks, in proportion to the compiled program's working memory, until
    the program fits the budget.

    Raises:
      InputError: when one point alone needs more than the budget.
    """
    local = execution.points_per_device(ts)
    chunk = min(execution.chunk_size or (local if execution.strategy == "vmap" else 1), local)
    while True:
        compiled = _program(point, execution, len(args), chunk).lower(ts, *args).compile()
        memory = _working_bytes(compiled)
        if execution.chunk_size is not None or memory is None or memory <= execution.budget:
            return compiled, chunk, memory
        if chunk == 1:
            raise InputError(
                f"one path point needs {memory / 2**30:.2f} GiB of working memory, "
                f"more than the budget of {execution.budget / 2**30:.2f} GiB; lower "
                f"batch_size or raise memory_budget"
            )
        chunk = max(1, min(chunk - 1, int(chunk * execution.budget / memory)))


def _program(point: Callable, execution: _Execution, num_args: int, chunk: int) -> Callable:
    """The jitted map of ``point`` over the points, ``chunk`` of them vectorized together;
    for ``"shard_map"`` each device maps its share of the points (the other arguments whole
    on every device)."""

    def mapped(ts, *args):
        return jax.lax.map(lambda t: point(t, *args), ts, batch_size=chunk)

    if execution.strategy != "shard_map":
        return jax.jit(mapped)
    axis = execution.mesh.axis_names[0]
    specs = (P(axis),) + (P(),) * num_args
    return jax.jit(
        jax.shard_map(
            mapped, mesh=execution.mesh, in_specs=specs, out_specs=P(axis), check_vma=False
        )
    )
