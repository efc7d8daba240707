"""Every command the README and the documentation (docs/) show, as written: each entry-point
command line is accepted by its parse and checks (in a folder laid out as the earlier
commands leave it), and the own-data walk-through runs end to end from the command line (on
a small slice of its data), with both of its ``auto`` settings."""

from __future__ import annotations

import importlib
import json
import os
import pathlib
import re
import shlex
import subprocess
import sys

import pytest

from experiments import cli
from mmc_jax import training

ROOT = pathlib.Path(__file__).resolve().parents[1]

#: Values of the shell variables the README's loops and examples use.
SHELL = {"model": "vgg13", "p": "0.9", "path": "linear", "S": "workdirs/cbft/seed_0", "i": "0"}


#: The pages whose commands are checked: the README, then the documentation's pages.
PAGES = [
    ROOT / "README.md",
    *sorted(p for p in (ROOT / "docs").rglob("*.md") if "_build" not in p.parts),
]


def readme_commands() -> list[str]:
    """The commands of the code blocks of the README and the documentation that start a
    Python program (continuation lines joined, the install steps before ``&&`` dropped)."""
    commands = []
    for page in PAGES:
        inside, current = False, ""
        for line in page.read_text().splitlines():
            if line.strip().startswith("```"):
                inside = not inside
                continue
            text = line.strip()
            if not inside or (
                not current and (text.startswith(("#", ">>>")) or "python" not in text)
            ):
                continue
            current = f"{current} {text.rstrip(chr(92)).strip()}".strip()
            if not text.endswith("\\"):
                command = current.split("&&")[-1].strip()
                if re.match(r"python3? (-m experiments\.|-c )", command):
                    commands.append(command)
                current = ""
    return commands


def entry_command(command: str) -> tuple[str, list[str]]:
    """``(entry point, argv)`` of a README command, shell variables and comments resolved."""
    words = shlex.split(command, comments=True)
    words = [re.sub(r"\$\{?(\w+)\}?", lambda m: SHELL[m.group(1)], w) for w in words]
    words = words[:-1] if words[-1:] == ["&"] else words  # started in the background
    assert words[:2] == ["python", "-m"], command
    return words[2].removeprefix("experiments."), words[3:]


COMMANDS = [c for c in readme_commands() if " -m experiments." in c]


def test_the_readme_shows_every_entry_point():
    entries = {entry_command(c)[0] for c in COMMANDS}
    assert {"train", "cbft", "connectivity", "similarity", "plane"} <= entries
    assert len(COMMANDS) >= 20


def _model_folder(folder: pathlib.Path, **sections) -> str:
    """A folder holding a model description (what the checks read) of the given sections."""
    folder.mkdir(parents=True, exist_ok=True)
    config = training.TrainConfig().changed(**sections).to_dict()
    (folder / "model.json").write_text(
        json.dumps({"config": config, "num_classes": 10, "image_shape": [32, 32, 3]})
    )
    return str(folder)


@pytest.fixture
def readme_folder(tmp_path, monkeypatch):
    """A working folder laid out as the README's earlier commands leave it: the demo's and
    the main job's model folders, the ResNet-18 pair, a quadratic path's workdir and the
    own-data file; ``experiments`` and ``examples`` as in the repository."""
    for name in ("experiments", "examples"):
        (tmp_path / name).symlink_to(ROOT / name)
    for name in ("demo_nc", "demo_c", "demo_c100", "mine"):
        _model_folder(tmp_path / "workdirs" / name)
    for method in ("cue_model", "cbft", "naive_ft_small", "lpft", "llrt", "naive_ft_medium"):
        _model_folder(tmp_path / "workdirs/cbft/seed_0" / method)
    for name in ("c10_rn18_nc", "c10_rn18_c"):
        _model_folder(
            tmp_path / "workdirs" / name, data={"name": "cifar10"}, model={"name": "resnet18"}
        )
    quadratic = tmp_path / "workdirs/c_to_cbft_quadratic"
    _model_folder(quadratic / "control")
    (quadratic / "results.json").write_text(
        json.dumps(
            {
                "control": "control",
                "model_a": "workdirs/cbft/seed_0/cue_model",
                "model_b": "workdirs/cbft/seed_0/cbft",
            }
        )
    )
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "easy.npz").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("command", COMMANDS, ids=range(len(COMMANDS)))
def test_readme_command_is_accepted_as_written(readme_folder, command):
    name, argv = entry_command(command)
    entry = importlib.import_module(f"experiments.{name}").ENTRY
    before = sorted(readme_folder.rglob("*"))
    cli.check(entry, cli.parse(entry, ["prog", *argv]))  # InputError for what it would refuse
    assert sorted(readme_folder.rglob("*")) == before  # nothing written


@pytest.mark.slow
def test_own_data_walkthrough_from_the_command_line(tmp_path):
    """The README's own-data commands as written (the data file, then experiments.cbft with
    ``cue_proportion=auto`` and ``n_clean=auto``) plus flags that make them small: the
    calibration, the n_clean probes and every method run, and the resolved values are in
    results.json while the stored config keeps the user's ``auto``."""
    own = [c for c in readme_commands() if "easy.npz" in c]
    make, job = own[0], own[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run(shlex.split(make), cwd=tmp_path, env=env, timeout=300)
    assert run.returncode == 0 and (tmp_path / "data" / "easy.npz").is_file()
    small = [
        "--config.cue_model.model.width=0.25",
        "--config.cue_model.data.num_train=600",
        "--config.cue_model.data.num_test=200",
        "--config.cue_model.optim.epochs=2",
        "--config.cue_model.optim.batch_size=100",
        "--config.cue_model.eval_batch_size=200",
        "--config.data.n_cue=300",
        "--config.optim.epochs=1",
        "--config.optim.batch_size=100",
        "--config.finetune.llrt.epochs=2",
        "--config.path.num_points=3",
        "--config.path.bn_batches=1",
        "--config.path.batch_size=200",
    ]
    result = subprocess.run(
        [sys.executable, *shlex.split(job)[1:], *small],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((tmp_path / "workdirs/easy/results.json").read_text())
    assert 0.5 <= results["cue_proportion"] <= 0.995 and results["calibration"]["trials"]
    assert results["n_clean"] in (125, 250, 500) and results["n_clean_probes"]
    seed = json.loads((tmp_path / "workdirs/easy/seed_0/results.json").read_text())
    assert seed["config"]["data"]["n_clean"] == "auto"
    assert seed["config"]["cue_model"]["data"]["cue_proportion"] == "auto"
    assert set(seed["methods"]) >= {"cue_model", "cbft", "lpft"}
