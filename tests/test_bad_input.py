"""Bad input, generated: every entry point × every field of its config (each section, with
and without ``--config=<file>``, and its ``:variant`` configs) × the kinds of mistake (an
unknown sibling name, a value of the wrong type, a value out of bounds, an empty string),
and every path-like argument × (missing, a file for a folder, an empty folder, a folder of
another model). Each must be refused by the command line's own parse and check, before any
work, with one line naming the field or path and what it accepts.

The cases run in-process (:func:`experiments.cli.parse` and :func:`experiments.cli.check`
on private flag values: hundreds of cases in seconds); a handful run as real programs for
the exit path (status 2, one ``error:`` line on standard error, no traceback, nothing
written, no lock left behind).
"""

from __future__ import annotations

import importlib
import json
import pathlib

import programs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from experiments import cli, fields
from mmc_jax import InputError, training

NAMES = ("train", "cbft", "connectivity", "similarity", "layerwise", "plane", "preview")
ENTRIES = {name: importlib.import_module(f"experiments.{name}").ENTRY for name in NAMES}

#: Every config file each entry point takes (variants with their argument).
CONFIGS = {
    "train": ["demo.py", "paper.py:cifar10,vgg13,0.9", "paper.py:dominoes,resnet18,0.0"],
    "cbft": [
        "cbft.py",
        "fig5.py",
        "cbft_paths.py",
        "ablations.py",
        "cbft_paper.py:cifar10,vgg13,0.9",
    ],
    "connectivity": ["connectivity.py", "connectivity.py:paper"],
    "similarity": ["similarity.py"],
    "layerwise": ["layerwise.py"],
    "plane": ["plane.py"],
    "preview": ["preview.py"],
}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Model folders (``a``, ``b``, ``c``: cnn4 on shapes10; ``vgg``: another architecture),
    an empty folder, a folder that holds no model, a file, a missing path, and an npz
    dataset: what the path-like arguments are given. (The checks read ``model.json`` only.)"""
    root = tmp_path_factory.mktemp("inputs")
    config = training.TrainConfig()
    for name, model in (("a", "cnn4"), ("b", "cnn4"), ("c", "cnn4"), ("vgg", "vgg13_small")):
        (root / name).mkdir()
        stored = config.changed(model={"name": model}).to_dict()
        (root / name / "model.json").write_text(
            json.dumps({"config": stored, "num_classes": 10, "image_shape": [32, 32, 3]})
        )
    (root / "empty").mkdir()
    (root / "notes").mkdir()
    (root / "notes" / "keep.txt").write_text("not a run")
    (root / "file.txt").write_text("a file")
    (root / "data.npz").write_bytes(b"")
    return {
        "a": str(root / "a"),
        "b": str(root / "b"),
        "c": str(root / "c"),
        "vgg": str(root / "vgg"),
        "empty": str(root / "empty"),
        "notes": str(root / "notes"),
        "file": str(root / "file.txt"),
        "missing": str(root / "missing"),
        "npz": str(root / "data.npz"),
        "workdir": str(root / "work" / "run"),
    }


def base_args(entry: str, f: dict) -> list[str]:
    """The flags that make a valid command line of ``entry`` (besides its config)."""
    return {
        "connectivity": [f"--model_a={f['a']}", f"--model_b={f['b']}"],
        "layerwise": [f"--model_a={f['a']}", f"--model_b={f['b']}"],
        "similarity": [f"--models={f['a']},{f['b']}"],
        "plane": [f"--models={f['a']},{f['b']},{f['c']}"],
    }.get(entry, []) + [f"--workdir={f['workdir']}"]


def attempt(entry: str, argv: list[str]) -> str | None:
    """Parses and checks ``argv`` for ``entry`` in-process; the error's message, or None
    when the command line is accepted."""
    try:
        cli.check(ENTRIES[entry], cli.parse(ENTRIES[entry], ["prog", *argv]))
    except InputError as err:
        return str(err)
    return None


def refused(entry: str, argv: list[str], *names: str) -> str:
    """Asserts that ``argv`` is refused with one line naming each of ``names``."""
    message = attempt(entry, argv)
    assert message is not None, f"accepted: {entry} {argv}"
    assert "\n" not in message.strip() and "Traceback" not in message, message
    for name in names:
        assert name in message, f"{name!r} not named in: {message}"
    return message


def config_flags(entry: str, config: str | None) -> list[str]:
    return [] if config is None else [f"--config=experiments/configs/{config}"]


def config_of(entry: str, config: str | None):
    args = cli.parse(ENTRIES[entry], ["prog", *config_flags(entry, config)])
    return args.config


CASES = [(entry, config) for entry in NAMES for config in [None, *CONFIGS[entry]]]


@pytest.mark.parametrize("entry,config", CASES, ids=[f"{e}:{c or 'default'}" for e, c in CASES])
def test_every_field_refuses_every_kind_of_mistake(folders, entry, config):
    """Per field: an unknown sibling, a value of the wrong type, values out of bounds, an
    empty string (refused, unless the field takes "" for "none")."""
    base = base_args(entry, folders) + config_flags(entry, config)
    assert attempt(entry, base) is None  # the valid command line is accepted
    leaves = fields.leaves(config_of(entry, config))
    assert leaves
    for name, value in leaves.items():
        rule = fields.rule_of(name)  # every field has a rule
        parent = name.rpartition(".")[0]
        sibling = f"{parent}.no_such_field" if parent else "no_such_field"
        message = refused(entry, [*base, f"--config.{sibling}=1"], sibling)
        assert name.rpartition(".")[2] in message  # the fields it has are listed

        for bad in wrong_types(rule, value):
            refused(entry, [*base, f"--config.{name}={bad}"], name, "must be")
        for bad in out_of_bounds(rule):
            refused(entry, [*base, f"--config.{name}={bad}"], name, "must be")
        if rule.kind in ("folder", "text"):  # "" means none / every
            assert attempt(entry, [*base, f"--config.{name}="]) is None
        elif rule.kind != "flag":  # a boolean flag without value means True
            message = refused(entry, [*base, f"--config.{name}="], name)
            assert "must be" in message
    assert not pathlib.Path(folders["workdir"]).exists()  # nothing written, no lock


def wrong_types(rule: fields.Rule, value) -> list[str]:
    """Values of the wrong type for a field (as command-line text)."""
    if rule.kind == "number":
        return ["abc", "(1, 2)"] + (["0.5"] if rule.integer else [])
    if rule.kind == "flag":
        return ["maybe", "3"]
    if rule.kind in ("choice", "dataset", "model"):
        return ["123", "no_such_value"]
    if rule.kind == "names":
        return ["123", "(1.5, 'x')"]
    if rule.kind == "seeds":
        return ["abc", "(1.5, 2)", "(-1,)"]
    return []  # folders and text: every text is of the right type


def out_of_bounds(rule: fields.Rule) -> list[str]:
    """A few values just outside a number's bounds (hypothesis draws more below)."""
    if rule.kind != "number":
        return []
    return {
        "count": ["0", "-1"],
        "non_negative": ["-1"],
        "positive": ["0", "-0.5"],
        "fraction": ["-0.1", "1.5"],
        "momentum": ["1", "-0.1"],
        "points": ["1", "0"],
    }[rule.bounds]


#: Values out of each kind of bounds, drawn by hypothesis: (integers, numbers).
OUT_OF_BOUNDS = {
    "count": st.integers(max_value=0),
    "non_negative": st.integers(max_value=-1),
    "points": st.integers(max_value=1),
}
OUT_OF_BOUNDS_REAL = {
    "non_negative": st.floats(-1e12, -1e-9),
    "positive": st.floats(-1e12, 0.0),
    "fraction": st.floats(1.000001, 1e12) | st.floats(-1e12, -1e-9),
    "momentum": st.floats(1.0, 1e12) | st.floats(-1e12, -1e-9),
}

NUMBER_FIELDS = sorted(
    {
        (entry, name)
        for entry in NAMES
        for name, _ in fields.leaves(config_of(entry, None)).items()
        if fields.rule_of(name).kind == "number"
    }
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_numbers_out_of_their_bounds_are_refused(folders, data):
    entry, name = data.draw(st.sampled_from(NUMBER_FIELDS))
    rule = fields.rule_of(name)
    value = data.draw((OUT_OF_BOUNDS if rule.integer else OUT_OF_BOUNDS_REAL)[rule.bounds])
    refused(entry, [*base_args(entry, folders), f"--config.{name}={value!r}"], name, "must be")


CHOICE_FIELDS = sorted(
    {
        (entry, name)
        for entry in NAMES
        for name, _ in fields.leaves(config_of(entry, None)).items()
        if fields.rule_of(name).kind in ("choice", "names")
    }
)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_unknown_choices_are_refused_with_the_choices_listed(folders, data):
    entry, name = data.draw(st.sampled_from(CHOICE_FIELDS))
    rule = fields.rule_of(name)
    word = data.draw(st.from_regex(r"[a-z][a-z_]{0,12}", fullmatch=True))
    if word in rule.choices:
        return
    message = refused(entry, [*base_args(entry, folders), f"--config.{name}={word}"], name)
    assert all(choice in message for choice in rule.choices)


def path_arguments(entry: str) -> list[str]:
    """The path-like arguments of an entry point: its flags and its folder fields."""
    own = {
        "connectivity": ["--model_a", "--model_b"],
        "layerwise": ["--model_a", "--model_b"],
        "similarity": ["--models"],
        "plane": ["--models"],
    }.get(entry, [])
    folder_fields = [
        f"--config.{name}"
        for name in fields.leaves(config_of(entry, None))
        if fields.rule_of(name).kind == "folder"
    ]
    return own + folder_fields


PATHS = [(entry, arg) for entry in NAMES for arg in path_arguments(entry)]


@pytest.mark.parametrize("entry,arg", PATHS, ids=[f"{e}:{a}" for e, a in PATHS])
@pytest.mark.parametrize("kind", ["missing", "file", "empty", "notes", "another_model"])
def test_path_arguments_name_what_is_wrong(folders, entry, arg, kind):
    holds_any = arg.endswith("data_dir")
    if kind == "another_model" and (holds_any or arg.endswith("cue_model_dir")):
        return  # any model may be θ_C; any folder may hold TFDS data
    if holds_any and kind in ("empty", "notes"):  # any existing folder is accepted
        assert attempt(entry, [*base_args(entry, folders), f"{arg}={folders[kind]}"]) is None
        return
    path = folders["vgg"] if kind == "another_model" else folders[kind]
    base = [a for a in base_args(entry, folders) if not a.startswith(arg + "=")]
    value = path
    if arg == "--models":  # one bad entry among good ones
        value = ",".join(
            [path] + [folders[k] for k in "abc"][: 2 if entry == "similarity" else 3][1:]
        )
        if kind != "another_model":
            value = ",".join([folders["a"], path] + ([folders["c"]] if entry == "plane" else []))
    message = refused(entry, [*base, f"{arg}={value}"])
    assert path in message or (kind == "another_model" and "different architectures" in message)
    expected = {
        "missing": "no such folder",
        "file": "a file, not a folder",
        "empty": "an empty folder",
        "notes": "holds no model",
        "another_model": "different architectures",
    }[kind]
    if holds_any:
        expected = {"missing": "no such folder", "file": "a file, not a folder"}[kind]
    assert expected in message, message


@pytest.mark.parametrize("entry", NAMES)
def test_workdir_must_be_a_folder(folders, entry):
    base = [a for a in base_args(entry, folders) if not a.startswith("--workdir")]
    for value in (folders["file"], folders["file"] + "/below", ""):
        refused(entry, [*base, f"--workdir={value}"], "--workdir", "must be a folder")
    assert attempt(entry, [*base, f"--workdir={folders['empty']}"]) is None
    refused(entry, [*base, f"--workdir={folders['notes']}", "--restart"], "does not look like")


@pytest.mark.parametrize("entry", NAMES)
def test_config_file_mistakes(folders, entry):
    base = base_args(entry, folders)
    refused(entry, [*base, "--config=experiments/configs/nope.py"], "nope.py", "no such config")
    refused(entry, [*base, "--config=experiments/configs/nope.py", "--config.seed=1"], "nope.py")
    refused(entry, [*base, "stray"], "unexpected argument 'stray'")
    refused(entry, [*base, "--no_such_flag=1"], "no_such_flag")


def test_config_variants_name_their_argument(folders):
    refused(
        "connectivity",
        [*base_args("connectivity", folders), "--config=experiments/configs/connectivity.py:x"],
        "connectivity.py:x",
        "'paper'",
    )


def test_the_reported_cases(folders):
    """The four command lines that ended in tracebacks."""
    for entry in ("train", "cbft", "connectivity", "similarity"):
        config = CONFIGS[entry][0]
        refused(
            entry,
            [
                *base_args(entry, folders),
                f"--config=experiments/configs/{config}",
                "--config.no_such_field=1",
            ],
            "unknown config field 'no_such_field'",
        )
    refused(
        "cbft",
        ["--config=experiments/configs/fig5.py", "--config.no_such_field=1"],
        "no_such_field",
    )
    refused("train", [f"--workdir={folders['file']}"], folders["file"])
    refused("train", ["--config=experiments/configs/missing.py"], "missing.py")


#: Mistakes that no single field's rule sees: moved fields, fields that exclude each other,
#: pairs of models, lists.
NAMED = [
    ("train", ["--config.cue_proportion=0.87"], "is now 'data.cue_proportion'"),
    ("train", ["--config.model=vgg13"], "is now a section; set 'model.name'"),
    ("cbft", ["--config.path_points=3"], "'path_points' is now 'path.num_points'"),
    ("cbft", ["--config.seeds=(1, 1)"], "seeds must be"),
    ("cbft", ["--config.seeds=()"], "seeds must be"),
    ("cbft", ["--config.methods=()"], "methods must be"),
    ("cbft", ["--config.methods=cbft,erm"], "unknown 'erm'"),
    ("cbft", ["--config.path.targets=theta_0"], "path.targets must be"),
    ("cbft", ["--config.path.conditions=clean,cue"], "unknown 'clean'"),
    (
        "cbft",
        [
            "--config.cue_model.data.cue_proportion=auto",
            "--config.cue_model.model.init_from=nocue_model",
        ],
        "cannot be combined",
    ),
    ("cbft", ["--config.nocue_model_dir={vgg}"], "different architectures"),
    ("train", ["--config.model.init_from={vgg}"], "different architectures"),
    ("connectivity", ["--model_a={a}", "--model_b={vgg}"], "different architectures"),
    ("connectivity", ["--model_b="], "give both --model_a and --model_b"),
    ("connectivity", ["--model_a={a}", "--model_b={b}", "--path=cubic"], "--path=cubic"),
    ("layerwise", ["--model_a="], "give both --model_a and --model_b"),
    ("similarity", ["--models={a}"], "at least 2"),
    ("similarity", ["--models=x={a},x={b}"], "two models are named 'x'"),
    ("similarity", ["--models={a},{vgg}"], "different architectures"),
    ("plane", ["--models={a},{b}"], "at least 3"),
    ("plane", ["--models={a},{b},{c}", "--curve={a}"], "either --models or --curve"),
    ("plane", ["--models=", "--curve={a}"], "holds no quadratic path"),
]


@pytest.mark.parametrize(
    "entry,args,message", NAMED, ids=[f"{e}:{' '.join(a)}" for e, a, _ in NAMED]
)
def test_named_mistakes(folders, entry, args, message):
    own = {a.split("=")[0] for a in args}
    base = [a for a in base_args(entry, folders) if a.split("=")[0] not in own]
    refused(entry, [*base, *(a.format(**folders) for a in args)], message)


#: Command lines run as real programs: exit status 2, one error line, nothing written.
PROGRAMS = [
    ("train", ["--config=experiments/configs/demo.py", "--config.no_such_field=1"]),
    ("cbft", ["--config.optim.learning_rate=-1"]),
    ("train", ["--workdir={file}"]),
    ("connectivity", ["--config=experiments/configs/nope.py", "--model_a={a}", "--model_b={vgg}"]),
    ("plane", ["--models={a},{b},{empty}"]),
]


@pytest.mark.parametrize("entry,args", PROGRAMS, ids=[f"{e}:{a[0]}" for e, a in PROGRAMS])
def test_programs_exit_2_with_one_line_and_write_nothing(folders, tmp_path, entry, args):
    args = [a.format(**folders) for a in args]
    workdir = tmp_path / "new" / "run"
    if not any(a.startswith("--workdir") for a in args):
        args.append(f"--workdir={workdir}")
    programs.refused(entry, args, only_line=True)
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("entry", NAMES)
def test_a_workdir_of_a_newer_layout_is_refused_naming_both_versions(folders, tmp_path, entry):
    from mmc_jax.reporting import files

    workdir = tmp_path / "newer"
    workdir.mkdir()
    (workdir / files.LAYOUT_FILE).write_text(json.dumps({"layout": files.LAYOUT_VERSION + 1}))
    base = [a for a in base_args(entry, folders) if not a.startswith("--workdir")]
    message = refused(entry, [*base, f"--workdir={workdir}"], str(workdir))
    assert f"layout version {files.LAYOUT_VERSION + 1}" in message
    assert f"1-{files.LAYOUT_VERSION}" in message
    # --restart deletes it (an entry point wrote it) instead of reading it.
    assert attempt(entry, [*base, f"--workdir={workdir}", "--restart"]) is None
