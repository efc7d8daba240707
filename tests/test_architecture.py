"""The layout is the architecture: packages by concept whose imports go one way, no private
name used outside its module, short functions, and the documented public names importable."""

from __future__ import annotations

import ast
import collections
import dataclasses
import importlib
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
LIBRARY = ROOT / "mmc_jax"

#: The packages and top-level modules, each importing only those before it.
LAYERS = (
    "runtime",
    "data",
    "reporting",
    "jobs",
    "models",
    "metrics",
    "paths",
    "training",
    "permute",
    "connectivity",
    "analysis",
    "finetune",
)


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(LIBRARY.rglob("*.py"))}


def _imports(path: pathlib.Path):
    """``(imported module, name or None)`` of every mmc_jax import in ``path``."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mmc_jax"):
            for alias in node.names:
                yield node.module, alias.name
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("mmc_jax"):
                    yield alias.name, None


def _layer(module: str) -> str:
    return module.split(".")[1] if module.count(".") else ""


def test_top_level_holds_the_concepts_only():
    entries = sorted(p.name for p in LIBRARY.iterdir() if not p.name.startswith(("_", ".")))
    assert {e.removesuffix(".py") for e in entries} == set(LAYERS)


def test_packages_import_one_way():
    wrong = []
    for module, path in MODULES.items():
        here = _layer(module)
        if not here:
            continue
        for imported, name in _imports(path):
            target = _layer(imported) or (name if name in LAYERS else "")
            if target and target != here and LAYERS.index(target) > LAYERS.index(here):
                wrong.append(f"{module} imports {imported} {name or ''}")
    assert not wrong, "\n".join(wrong)


def test_no_import_cycle_between_modules():
    graph = collections.defaultdict(set)
    for module, path in MODULES.items():
        if path.name == "__init__.py":
            continue  # a package's re-exports
        for imported, name in _imports(path):
            target = f"{imported}.{name}" if f"{imported}.{name}" in MODULES else imported
            if target in MODULES and MODULES[target].name != "__init__.py":
                graph[module].add(target)

    def reaches(start, goal, seen):
        for nxt in graph[start]:
            if nxt == goal or (nxt not in seen and not seen.add(nxt) and reaches(nxt, goal, seen)):
                return True
        return False

    cyclic = [m for m in list(graph) if reaches(m, m, set())]
    assert not cyclic, cyclic


def test_no_private_name_crosses_modules():
    crossing = [
        f"{module} imports {imported}.{name}"
        for module, path in MODULES.items()
        for imported, name in _imports(path)
        if name and name.startswith("_") and imported != module
    ]
    assert not crossing, "\n".join(crossing)


def test_functions_are_short():
    long = [
        f"{module}.{node.name}: {node.end_lineno - node.lineno + 1} lines"
        for module, path in MODULES.items()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno - node.lineno + 1 > 80
    ]
    assert not long, "\n".join(long)


#: The public contract (the names of the API that docs and outside checks use).
CONTRACT = {
    "mmc_jax.data": "CONDITIONS load normalize cue_mask box_cue counterfactual Dataset",
    "mmc_jax.models": "create",
    "mmc_jax.paths": "linear bezier",
    "mmc_jax.permute": "spec_for validate apply weight_matching derive_spec",
    "mmc_jax.connectivity.path_eval": "evaluate_path compile_evaluation",
    "mmc_jax.finetune": "FinetuneConfig cbft naive_finetune llrt objectives",
    "mmc_jax.training": "TrainConfig OptimConfig train_and_evaluate evaluate load_model",
    "mmc_jax": "InputError",
}


@pytest.mark.parametrize("module", sorted(CONTRACT))
def test_public_names_import(module):
    loaded = importlib.import_module(module)
    missing = [n for n in CONTRACT[module].split() if not hasattr(loaded, n)]
    assert not missing


def test_every_config_of_the_library_is_built_one_way():
    """Each typed config is a ``runtime.configs.Config`` whose ``of`` builds nested sections
    from plain dicts and round-trips through ``to_dict``."""
    from mmc_jax import finetune, training
    from mmc_jax.connectivity import curve
    from mmc_jax.runtime.configs import Config

    for cls in (training.TrainConfig, finetune.FinetuneConfig, curve.CurveConfig):
        assert issubclass(cls, Config)
        default = cls()
        assert cls.of(default.to_dict()) == default
        assert cls.of(None) == default
        nested = [f.name for f in dataclasses.fields(cls) if isinstance(f.default, Config)]
        assert nested, cls  # every one has an SGD section at least
        for name in nested:
            assert isinstance(getattr(cls.of({name: {}}), name), Config)
