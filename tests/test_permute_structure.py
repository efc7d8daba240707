"""The permute package's own structure: modules share only public names, never dispatch on the
library's model classes, and keep functions short; and the layout predicate that replaces
that dispatch."""

import ast
import functools
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

import mmc_jax
from mmc_jax import models, permute

PACKAGE = pathlib.Path(mmc_jax.__file__).parent / "permute"
MODULES = sorted(PACKAGE.glob("*.py"))


def _tree(path):
    return ast.parse(path.read_text(), filename=str(path))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_no_private_name_crosses_modules(path):
    """No ``from mmc_jax.x import _y``, and no ``x._y`` on a module imported from mmc_jax."""
    tree = _tree(path)
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mmc_jax"):
            assert not [a.name for a in node.names if a.name.startswith("_")], ast.unparse(node)
            modules |= {a.asname or a.name for a in node.names}
        elif isinstance(node, ast.Import):
            modules |= {a.asname or a.name for a in node.names if a.name.startswith("mmc_jax")}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if node.value.id in modules and node.attr.startswith("_"):
                pytest.fail(f"{path.name}:{node.lineno}: {ast.unparse(node)}")


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_no_dispatch_on_the_library_models(path):
    """The permute package derives what it needs from the variables and the trace: it does
    not import the library's models, so no ``isinstance(model, VGG)`` (only the NNX bridge,
    which turns any NNX module into variables)."""
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            bridge = module == "mmc_jax.models.nnx_bridge"
            assert bridge or not module.startswith("mmc_jax.models"), ast.unparse(node)
            if node.module == "mmc_jax":
                assert "models" not in {a.name for a in node.names}, ast.unparse(node)
        elif isinstance(node, ast.Import):
            assert not any(a.name.startswith("mmc_jax.models") for a in node.names)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_functions_are_short(path):
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(_tree(path))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno - node.lineno + 1 > 70
    ]
    assert not long, f"{path.name}: {', '.join(long)}"


def _shapes(model):
    """The variables' shapes (all ``has_layout`` looks at), without running the model."""
    init = functools.partial(model.init, train=False)
    return jax.eval_shape(init, jax.random.key(0), jnp.zeros((1, 16, 16, 3)))


@pytest.mark.parametrize("name", list(models.PRESETS))
def test_has_layout_is_true_for_the_paper_models_only(name):
    model = models.create(name, 10)
    paper = isinstance(model, (models.VGG, models.SmallCNN, models.ResNet))
    assert permute.has_layout(model, _shapes(model)) == paper


def test_has_layout_needs_a_linen_module_and_the_layout_names():
    model = models.create("cnn4", 10)
    variables = _shapes(model)
    assert not permute.has_layout(model.apply, variables)
    params = dict(variables["params"])
    params["conv9"] = params.pop("conv3")  # a gap in the chain
    assert not permute.has_layout(model, {**variables, "params": params})
    dense = nn.Dense(3)
    assert not permute.has_layout(dense, dense.init(jax.random.key(0), jnp.zeros((1, 2))))
