"""What the model-comparison entry points (``connectivity``, ``similarity``, ``layerwise``,
``plane``) share: checks of their evaluation settings, model loading, result reuse and the
permutation alignment of one model to another."""

from __future__ import annotations

import json
import pathlib
import shutil
from typing import Callable, Optional

import jax
import jax.numpy as jnp
from absl import logging

from experiments.sections import PathConfig, PermutationConfig
from mmc_jax import InputError, data, permute, training
from mmc_jax.data.batching import sample_batches
from mmc_jax.permute import orthogonal
from mmc_jax.permute.sites import as_apply
from mmc_jax.reporting import files
from mmc_jax.runtime import distributed


def check_path(path) -> PathConfig:
    """The typed ``path`` section (the one check of it, for every entry point).

    Raises:
      InputError: an unknown field or an impossible value, named.
    """
    return PathConfig.of(path)


def check_permutation(permutation) -> PermutationConfig:
    """The typed ``permutation`` section.

    Raises:
      InputError: an unknown field or an impossible value, named.
    """
    return PermutationConfig.of(permutation)


def require_pair(model_a: Optional[str], model_b: Optional[str]) -> None:
    """One line when ``--model_a`` or ``--model_b`` is missing."""
    if not model_a or not model_b:
        raise InputError(
            "give both --model_a and --model_b (model folders: experiments.train "
            "workdirs or <cbft workdir>/seed_<s>/<method>)"
        )


def check_model_folder(name: str, folder: str) -> training.TrainConfig:
    """The training config of the model in ``folder``, read without loading the model.

    Raises:
      InputError: naming ``name`` (the flag or config field) and what it expects, when the
        folder is missing, a file, empty or holds no model.
    """
    from experiments import fields

    why = fields.folder_problem(str(folder or ""))
    if not folder or why:
        raise InputError(
            f"{name} must be {fields.MODEL_FOLDER}, got {folder!r}" + (f": {why}" if folder else "")
        )
    return training.model_config(folder)


def check_pair(model_a: Optional[str], model_b: Optional[str]) -> None:
    """``--model_a`` and ``--model_b`` both given, each holding a model, of one architecture
    and data."""
    require_pair(model_a, model_b)
    check_models({"--model_a": model_a, "--model_b": model_b})


def check_models(folders: dict[str, str]) -> None:
    """Every named folder holds a model, all of one architecture and data as the first."""
    first = None
    for name, folder in folders.items():
        flag = name if name.startswith("--") else f"--models entry {name!r}"
        config = check_model_folder(flag, folder)
        if first is None:
            first = (f"{name} ({folder})", config)
        else:
            training.check_compatible(first[1], config, first[0], f"{name} ({folder})")


def parse_models(entries: Optional[list[str]], at_least: int = 2) -> dict[str, str]:
    """``["θ_C=dir", "dir2"]`` → ``{"θ_C": "dir", "<dir2's last two parts>": "dir2"}``."""
    named: dict[str, str] = {}
    for entry in entries or []:
        name, _, folder = entry.rpartition("=")
        if not name:
            name = "/".join(pathlib.Path(folder).parts[-2:])
        if name in named:
            raise InputError(f"two models are named {name!r}; name them with NAME=DIR")
        named[name] = folder
    if len(named) < at_least:
        raise InputError(f"--models needs at least {at_least} model folders, got {len(named)}")
    return named


def load_models(folders: dict[str, str], path: Optional[PathConfig] = None):
    """The named model folders, checked to share architecture and data with the first.

    Returns:
      ``(model, {name: variables}, train, eval_set)``; ``eval_set`` is the ``path`` section's
      ``eval_split`` (default test) cut to its first ``num_eval`` samples when > 0.
    """
    loaded, model, first = {}, None, None
    for name, folder in folders.items():
        model_here, variables, model_config = training.load_model(folder)
        if first is None:
            model, first = model_here, (f"{name} ({folder})", model_config)
        else:
            training.check_compatible(first[1], model_config, first[0], f"{name} ({folder})")
        loaded[name] = variables
    train, test = training.load_data(first[1])
    return model, loaded, train, test if path is None else path.eval_set(train, test)


def test_metrics(path: PathConfig, apply_fn, variables, test, key, per_class: bool = False) -> dict:
    """``training.evaluate`` on the counterfactual test sets, with the ``path`` section's
    batch size, rand-image source and cue proportion (the same sets the paths are evaluated
    on); with ``per_class``, each class's accuracy too."""
    return training.evaluate(
        apply_fn,
        variables,
        test,
        key,
        batch_size=path.batch_size,
        random_from=path.random_from,
        per_class=per_class,
        cue_proportion=path.cue_proportion,
    )


def evaluator_settings(
    path: PathConfig,
    train,
    seed: int,
    workdir: Optional[pathlib.Path] = None,
    stored: Optional[dict] = None,
) -> dict:
    """The path evaluator's keyword arguments from the ``path`` section and the run's
    ``seed`` (random draws, shuffled BN batches), the one place they are read. With
    ``workdir``, the points are evaluated in parts of ``path.part_size`` saved under
    ``workdir/parts`` for the run described by ``stored`` (config and models), so a killed
    run resumes after its last saved part (parts of another run are cleared)."""
    settings = path.evaluator_kwargs(train, seed)
    if workdir is None:
        return settings
    store = workdir / "parts"
    run = json.loads(json.dumps(stored))
    marker = store / "run.json"
    if store.exists() and (not marker.is_file() or json.loads(marker.read_text()) != run):
        distributed.on_main("parts cleared", shutil.rmtree, store)
    if not marker.is_file():
        files.write_json(marker, run)
    saved = len(list(store.glob("part_*.npz")))
    if saved:
        logging.info(f"resuming: {saved} part(s) of the evaluation saved by an earlier run")
    return {**settings, "store": store, "part_size": path.part_size, "progress": True}


def run_in_shares(entry: str, run, config, folders: dict, workdir, execution, **extra) -> dict:
    """``run(config, folders, workdir, **extra)`` (similarity, plane), its saved parts shared
    by the executor's workers first when it names ``processes`` or ``ray``: a unit per worker
    evaluates every n-th part (``path_eval.evaluate_path``'s ``shard``), then ``run`` joins
    them here. ``auto`` and ``inline`` evaluate in this process, which already keeps the
    cores busy (an evaluation runs 1.8–2.2× slower on one core than on two)."""
    from mmc_jax import jobs

    workdir = pathlib.Path(workdir).resolve()
    execution = execution or jobs.Execution(executor="inline")
    if execution.executor in ("processes", "ray"):
        execution = execution.resolved()
        n = execution.workers
        shares = [
            jobs.Unit(
                f"parts_{k + 1}_of_{n}",
                f"experiments.{entry}:evaluate_share",
                str(workdir / "units" / f"parts_{k + 1}_of_{n}"),
                {
                    "config": config.to_dict(),
                    "folders": dict(folders),
                    "workdir": str(workdir),
                    "shard": [k, n],
                    **extra,
                },
            )
            for k in range(n)
        ]
        jobs.execute(jobs.Job(shares), execution)
    return run(config, folders, str(workdir), **extra)


def remove_parts(workdir: pathlib.Path) -> None:
    """Removes the saved parts once ``results.json`` holds everything."""
    if distributed.is_main():
        shutil.rmtree(workdir / "parts", ignore_errors=True)


def matching_batches(permutation: PermutationConfig, batch_size: int, seed: int, train) -> list:
    """Clean (cue removed) training batches for activation matching
    (:meth:`PermutationConfig.batches`; ``seed`` shuffles the paper code's)."""
    number, size, shuffled = permutation.batches(batch_size)
    images = sample_batches(train, size, number, seed if shuffled else None)
    return [data.clean_inputs(train.cue, x) for x in images]


def permutation_spec(
    permutation: PermutationConfig, model, variables, image_shape
) -> permute.PermutationSpec:
    """The spec derived from the model's traced forward pass, with the hand-written layout's
    names for the library's own models (which the paper's matching needs)."""
    residual = permutation.permute_residual
    library = permute.has_layout(model, variables)
    if library and residual:
        return permute.spec_for(model, variables, image_shape)
    if permutation.method == "paper":
        raise InputError(
            "permutation 'paper' reproduces the paper code on its models (VGG, "
            "SmallCNN, ResNet) with their residual streams permuted; use weight, "
            f"activation or greedy for {type(model).__name__}"
        )
    spec = permute.derive_spec(
        as_apply(model), variables, jnp.zeros((1, *image_shape)), residual_stream=residual
    )
    if spec.unsupported:
        logging.info(
            f"note: ops outside the permutation rules leave some axes unpermuted: "
            f"{', '.join(spec.unsupported)}"
        )
    return spec


def aligner(
    permutation: PermutationConfig, path: PathConfig, seed: int, model, variables, train
) -> Callable:
    """``align(a, b)``: ``b`` permuted to match ``a`` by ``permutation.method`` (weight
    matching, activation matching on clean training batches of the path's batch size,
    greedy, or the paper code's), with the permutation spec of ``model`` (``variables``: any
    of the models), and with ``permutation.orthogonal`` its residual streams rotated too
    (``mmc_jax.permute.orthogonal.align``); ``seed`` draws weight matching's order and the
    paper code's batches."""
    method = permutation.method
    spec = permutation_spec(permutation, model, variables, train.image_shape)
    batches = None
    if method != "weight" or permutation.orthogonal == "activation":
        batches = matching_batches(permutation, path.batch_size, seed, train)
    if method == "weight":
        key = jax.random.PRNGKey(seed)
        match = lambda spec, model, a, b, batches: permute.weight_matching(spec, a, b, key)  # noqa: E731
    else:
        match = {
            "activation": permute.activation_matching,
            "greedy": permute.greedy_activation_matching,
            "paper": permute.paper_activation_matching,
        }[method]
    if permutation.orthogonal == "none":
        return lambda a, b: permute.apply(spec, match(spec, model, a, b, batches), b)
    check_streams(spec, model, variables, train.image_shape)
    rotations = (
        {"model": model, "batches": batches} if permutation.orthogonal == "activation" else {}
    )

    def align(a, b):
        def permutations(a, b):
            return match(spec, model, a, b, batches)

        return orthogonal.align(spec, a, b, permutations, **rotations)

    return align


def check_streams(spec, model, variables, image_shape) -> None:
    """One-line error unless the model has residual streams whose rotations are
    symmetries (``permutation.orthogonal``)."""
    if not spec.streams:
        raise InputError("permutation.orthogonal: the model has no residual stream to rotate")
    example = jax.random.normal(jax.random.PRNGKey(0), (2, *image_shape))
    for name in spec.streams:
        permute.check_rotation(spec, name, as_apply(model), variables, example)
