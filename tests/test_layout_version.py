"""Layout versions: what this mmc_jax writes records its layout version; a folder written by
a newer layout is refused with one line naming both versions; folders written before
versions existed (version 1) still load."""

import json
import re
import shutil

import chex
import pytest

from configs import tiny_train_config
from mmc_jax import models, training
from mmc_jax.reporting import files
from mmc_jax.runtime.errors import InputError

NEWER = files.LAYOUT_VERSION + 1


def _run_folder(folder):
    """A training run folder (config, layout, one checkpoint) without training; returns
    its variables."""
    config = tiny_train_config()
    state = training.create_state(config, models.create("cnn4", 10, width=0.25), (32, 32, 3), 4)
    with training.RunCheckpoints(folder, config.to_dict()) as checkpoints:
        checkpoints.save(state, {"history": [], "seconds": 0.0}, force=True)
    return state.variables


def _refusal(folder) -> str:
    return re.escape(
        f"{folder} was written by mmc_jax layout version {NEWER}; this mmc_jax reads layout "
        f"versions 1-{files.LAYOUT_VERSION} (update mmc_jax"
    )


def test_fresh_runs_exports_and_workdirs_record_the_current_layout(tmp_path):
    _run_folder(tmp_path / "run")
    assert json.loads((tmp_path / "run" / files.LAYOUT_FILE).read_text()) == {
        "layout": files.LAYOUT_VERSION
    }
    variables = _run_folder(tmp_path / "other")
    training.save_model(tmp_path / "model", tiny_train_config(), variables, 10, (32, 32, 3))
    meta = json.loads((tmp_path / "model" / "model.json").read_text())
    assert meta["layout"] == files.LAYOUT_VERSION
    assert files.layout_version(tmp_path / "model") == 1  # the version lives in model.json
    # A workdir an entry point starts: marked when it holds nothing yet.
    assert files.mark_layout(tmp_path / "new") == files.LAYOUT_VERSION
    assert files.layout_version(tmp_path / "new") == files.LAYOUT_VERSION
    (tmp_path / "lock_only").mkdir()
    (tmp_path / "lock_only" / ".lock").write_text("1")
    assert files.mark_layout(tmp_path / "lock_only") == files.LAYOUT_VERSION


def test_folders_written_before_versions_still_load_and_stay_version_1(tmp_path):
    run = tmp_path / "run"
    variables = _run_folder(run)
    (run / files.LAYOUT_FILE).unlink()  # as written before versions existed
    _, loaded, _ = training.load_model(run)
    chex.assert_trees_all_equal(loaded["params"], variables["params"])
    # Resuming or marking it does not relabel its files.
    with training.RunCheckpoints(run, tiny_train_config().to_dict()):
        pass
    assert files.mark_layout(run) == 1
    assert not (run / files.LAYOUT_FILE).exists()
    model = tmp_path / "model"
    training.save_model(model, tiny_train_config(), variables, 10, (32, 32, 3))
    meta = json.loads((model / "model.json").read_text())
    del meta["layout"]
    (model / "model.json").write_text(json.dumps(meta))
    _, loaded, config = training.load_model(model)
    chex.assert_trees_all_equal(loaded["params"], variables["params"])
    assert training.model_config(model) == config


def test_a_run_of_a_newer_layout_is_refused_naming_both_versions(tmp_path):
    run = tmp_path / "run"
    _run_folder(run)
    (run / files.LAYOUT_FILE).write_text(json.dumps({"layout": NEWER}))
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    for read in (training.load_model, training.model_config, training.restore_trained):
        with pytest.raises(InputError, match=_refusal(run) + r" to read it\)$"):
            read(run)
    # A run to resume (RunCheckpoints, an entry point's workdir) also names --restart.
    with pytest.raises(InputError, match=_refusal(run) + r", or rerun with --restart"):
        training.RunCheckpoints(run, tiny_train_config().to_dict())
    with pytest.raises(InputError, match=_refusal(run) + r", or rerun with --restart"):
        files.mark_layout(run)
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_an_export_of_a_newer_layout_is_refused_naming_both_versions(tmp_path):
    model = tmp_path / "model"
    variables = _run_folder(tmp_path / "run")
    training.save_model(model, tiny_train_config(), variables, 10, (32, 32, 3))
    meta = json.loads((model / "model.json").read_text())
    (model / "model.json").write_text(json.dumps({**meta, "layout": NEWER, "config": {"x": 1}}))
    for read in (training.load_model, training.model_config):
        with pytest.raises(InputError, match=_refusal(model)):
            read(model)


def test_an_unreadable_layout_file_is_one_line(tmp_path):
    for text in ("{not json", '{"layout": "2"}', "[]"):
        (tmp_path / files.LAYOUT_FILE).write_text(text)
        with pytest.raises(InputError, match=r"layout.json cannot be read as a layout version"):
            files.check_layout(tmp_path)


def test_the_current_and_older_layouts_pass_the_check(tmp_path):
    assert files.check_layout(tmp_path / "missing") == 1
    for version in range(1, files.LAYOUT_VERSION + 1):
        (tmp_path / files.LAYOUT_FILE).write_text(json.dumps({"layout": version}))
        assert files.check_layout(tmp_path) == version
    shutil.rmtree(tmp_path)
