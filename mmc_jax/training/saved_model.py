"""Trained models as folders any entry point can load: every workdir that holds a model.

Two kinds of folder hold a model:

* an ``experiments.train`` workdir (``config.json`` with the training config, and the
  checkpoints of the run), which is also what ``experiments.cbft`` writes for θ_C, θ_NC and
  the from-scratch baseline;
* a folder with ``model.json`` (the training config of the architecture and data, the number
  of classes and the image shape) beside ``model/`` (the variables), which
  :func:`save_model` writes, e.g. for every fine-tuned model of ``experiments.cbft``
  (``<workdir>/seed_<s>/<method>/``).

:func:`load_model` reads either, so paths can be evaluated between any two of them
(:func:`restore_trained` reads a training run's folder, :func:`trained_config` its config).

``model.json`` records the layout version of the export (``"layout"``, see
:mod:`mmc_jax.reporting.files`;
exports without it are version 1); a folder of a newer layout is refused with one line.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import threading
from typing import Any, Mapping

import jax
import orbax.checkpoint as ocp

from mmc_jax import data, models
from mmc_jax.reporting.files import LAYOUT_VERSION, check_layout, write_json
from mmc_jax.runtime import distributed, parallel
from mmc_jax.runtime.errors import InputError, WriteError
from mmc_jax.training.build import create_model, load_data
from mmc_jax.training.checkpoint import (
    RunCheckpoints,
    discard_unfinished,
    orbax_errors_raised_only,
    refused_write,
    release_stranded,
)
from mmc_jax.training.config import TrainConfig

#: Config fields that fix a model's architecture, and those that fix its data.
ARCHITECTURE_FIELDS = ("model.name", "model.width", "model.dtype")
DATA_FIELDS = ("data.name", "data.dominoes_top", "data.dominoes_bottom", "data.seed")


def save_model(
    folder, config, variables: Mapping[str, Any], num_classes: int, image_shape
) -> pathlib.Path:
    """Writes ``variables`` and the description needed to rebuild their model to ``folder``.

    Args:
      folder: where to write (``model/`` and ``model.json``).
      config: the training config naming the architecture and the data (the one θ_C was
        trained with, for a model fine-tuned from θ_C).
      variables: ``{"params", "batch_stats"}``.
      num_classes, image_shape: of the data the model reads.

    ``model.json`` is written last, so a folder that has it holds a complete model. The
    variables are first written beside an earlier export (``.model.new``) and swapped in once
    complete, so a write that fails leaves the earlier export as it was.

    Raises:
      WriteError: the OS refused a write (disk full, no permission, read-only folder).
    """
    folder = pathlib.Path(folder).resolve()
    target, new, old = folder / "model", folder / ".model.new", folder / ".model.old"
    variables = {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}
    description = {
        "config": TrainConfig.of(config).to_dict(),
        "num_classes": int(num_classes),
        "image_shape": [int(d) for d in image_shape],
        "layout": LAYOUT_VERSION,
    }
    try:
        _write_variables(folder, target, new, old, variables)
        distributed.on_main("model in place", _swap_in, folder, target, new, old, description)
    except OSError as err:
        if isinstance(err, WriteError):
            raise
        raise WriteError(target, err) from err
    if distributed.is_main():
        shutil.rmtree(old, ignore_errors=True)
    return folder


def _write_variables(folder, target, new, old, variables) -> None:
    """Writes ``variables`` to ``new`` (an orbax checkpoint), after tidying what an export
    that did not finish left; raises WriteError when the OS refuses a write."""
    distributed.on_main("model folder tidy", _tidy, target, new, old)
    if jax.process_count() > 1:  # every process holds the same values; orbax writes once
        variables = parallel.fetch(variables)
    running = set(threading.enumerate())
    checkpointer = ocp.StandardCheckpointer()
    try:
        with orbax_errors_raised_only():
            checkpointer.save(new, variables)
            checkpointer.wait_until_finished()
    except Exception as err:
        cause = refused_write(err)
        release_stranded(set(threading.enumerate()) - running)
        for _ in range(3):  # closing re-raises what failed, once per failed write
            try:
                checkpointer.close()
                break
            except Exception:
                continue
        discard_unfinished(folder, new.name, settle_s=0.1)
        shutil.rmtree(new, ignore_errors=True)
        if cause is None:
            raise
        raise WriteError(target, cause) from err
    checkpointer.close()


def _tidy(target, new, old) -> None:
    """Undoes what an export that did not finish left."""
    if old.exists() and not target.exists():  # stopped between the two renames: undo
        os.replace(old, target)
    for leftover in (new, old):
        if leftover.exists():
            shutil.rmtree(leftover)


def _swap_in(folder, target, new, old, description) -> None:
    """Puts the variables written to ``new`` in place of ``target`` and writes
    ``model.json``; when a step fails, puts the earlier export back."""
    moved_old = placed_new = False
    try:
        if target.exists():
            os.replace(target, old)
            moved_old = True
        os.replace(new, target)
        placed_new = True
        write_json(folder / "model.json", description)
    except OSError:
        if placed_new:
            shutil.rmtree(target, ignore_errors=True)
        if moved_old:
            with contextlib.suppress(OSError):
                os.replace(old, target)
        shutil.rmtree(new, ignore_errors=True)
        raise


def has_model(folder) -> bool:
    """Whether ``folder`` holds a complete :func:`save_model` export."""
    return (pathlib.Path(folder) / "model.json").is_file()


def model_config(folder) -> TrainConfig:
    """The training config (architecture and data) of the model in ``folder``, read without
    loading the model.

    Raises:
      InputError: the folder holds no model, or one of a newer layout version.
    """
    path = pathlib.Path(folder).expanduser().resolve()
    check_layout(path)
    if has_model(path):
        meta = json.loads((path / "model.json").read_text())
        check_layout(path, meta.get("layout", 1))
        return TrainConfig.of(meta["config"])
    if (path / "config.json").is_file():
        config = json.loads((path / "config.json").read_text())
        if "model" in config and ("data" in config or "dataset" in config):  # a training run
            return TrainConfig.of(config)
    raise InputError(
        f"{path} holds no model (expected an experiments.train workdir, or a "
        "model folder of experiments.cbft such as <workdir>/seed_0/cbft)"
    )


def load_model(folder):
    """The model, variables and training config held by ``folder`` (either kind above).

    Returns:
      ``(module, variables, config)``; ``config`` is the :class:`TrainConfig` naming the
      architecture and the data (``training.load_data(config)`` loads the data).

    Raises:
      InputError: the folder holds no model, one of a newer layout version, or files that
        do not fit each other.
    """
    path = pathlib.Path(folder).expanduser().resolve()
    config = model_config(path)
    if not has_model(path):
        return restore_trained(path)
    meta = json.loads((path / "model.json").read_text())
    module = create_model(config, meta["num_classes"])
    abstract = jax.eval_shape(
        lambda: models.init(module, jax.random.PRNGKey(0), tuple(meta["image_shape"]))
    )
    abstract = {"params": abstract["params"], "batch_stats": abstract.get("batch_stats", {})}
    try:
        with ocp.StandardCheckpointer() as checkpointer:
            variables = checkpointer.restore(path / "model", abstract)
    except Exception as err:  # orbax raises several types for missing or bad files
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise InputError(
            f"{path / 'model'} cannot be read as a {config.model.name} ({first})"
        ) from None
    return module, dict(variables), config


def check_compatible(config_a, config_b, name_a: str = "model a", name_b: str = "model b") -> None:
    """Raises InputError unless two models (their training configs) share their
    architecture and their data."""
    config_a, config_b = TrainConfig.of(config_a), TrainConfig.of(config_b)
    for fields, what in ((ARCHITECTURE_FIELDS, "architectures"), (DATA_FIELDS, "data")):
        a = {f: _field(config_a, f) for f in fields}
        b = {f: _field(config_b, f) for f in fields}
        if a != b:
            diff = ", ".join(f"{f} {a[f]!r} vs {b[f]!r}" for f in fields if a[f] != b[f])
            raise InputError(f"{name_a} and {name_b} have different {what} ({diff})")


def _field(config: TrainConfig, dotted: str):
    section, name = dotted.split(".")
    return getattr(getattr(config, section), name)


def trained_config(workdir: str):
    """The config an ``experiments.train`` run in ``workdir`` was started with.

    Raises:
      InputError: no run there.
    """
    path = pathlib.Path(workdir).expanduser().resolve() / "config.json"
    if not path.is_file():
        raise InputError(
            f"no training run in {path.parent} (expected config.json from experiments.train)"
        )
    return TrainConfig.of(json.loads(path.read_text()))


def restore_trained(workdir: str):
    """The model, variables and config of a finished (or interrupted) ``experiments.train``
    run in ``workdir``.

    Reads only the parameters and BatchNorm statistics of the latest checkpoint: no data is
    loaded and no optimizer built. The number of classes and the image shape come from the
    run's ``data.json`` (written by :func:`train_and_evaluate`) or, for runs older than it,
    from the dataset's declaration (``data.describe``); only an npz dataset of such a run is
    loaded to learn them.

    Returns:
      ``(model, variables, config)``.

    Raises:
      InputError: no run or no checkpoint there, or a run of a newer layout version
        (:func:`mmc_jax.reporting.files.check_layout`), refused before its files are read.
    """
    path = pathlib.Path(workdir).expanduser().resolve()
    check_layout(path)
    config = trained_config(path)
    num_classes, image_shape = _data_shapes(path, config)
    model = create_model(config, num_classes)
    abstract = jax.eval_shape(lambda: models.init(model, jax.random.PRNGKey(0), image_shape))
    stored = json.loads((path / "config.json").read_text())  # as the run wrote it
    with RunCheckpoints(path, stored) as checkpoints:
        variables = checkpoints.restore_variables(abstract)
    return model, variables, config


#: Per-run file with the number of classes and the image shape of the run's data.
DATA_SHAPES = "data.json"


def _data_shapes(path: pathlib.Path, config: TrainConfig) -> tuple[int, tuple[int, ...]]:
    """``(num_classes, image_shape)`` of the data of the run in ``path``."""
    if (path / DATA_SHAPES).is_file():
        stored = json.loads((path / DATA_SHAPES).read_text())
        return int(stored["num_classes"]), tuple(stored["image_shape"])
    declared = data.describe(
        config.data.name, top=config.data.dominoes_top, bottom=config.data.dominoes_bottom
    )
    if declared is not None:
        return declared
    train, _ = load_data(config)
    return train.num_classes, train.image_shape


__all__ = [
    "ARCHITECTURE_FIELDS",
    "DATA_SHAPES",
    "DATA_FIELDS",
    "check_compatible",
    "has_model",
    "load_model",
    "model_config",
    "restore_trained",
    "save_model",
    "trained_config",
]
