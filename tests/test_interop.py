"""PyTorch interop without PyTorch: the paper code's names, round trips, clear errors
(``test_interop_torch.py`` compares logits with PyTorch itself)."""

import chex
import jax
import numpy as np
import pytest

from mmc_jax import InputError, models
from mmc_jax.models import interop


def _random_variables(architecture, seed=0):
    """Initial variables with non-trivial BatchNorm statistics."""
    variables = models.init(models.create(architecture, 10), jax.random.key(seed), (32, 32, 3))
    rng = np.random.default_rng(seed)
    stats = jax.tree.map(
        lambda s: rng.uniform(0.5, 1.5, s.shape).astype(np.float32), variables["batch_stats"]
    )
    return {**variables, "batch_stats": stats}


@pytest.mark.parametrize("architecture", interop.ARCHITECTURES)
def test_names_round_trip(architecture):
    variables = _random_variables(architecture)
    state_dict = interop.variables_to_torch(variables, architecture)
    assert "linear.weight" in state_dict and state_dict["linear.weight"].shape == (10, 512)
    back = interop.variables_from_torch(state_dict, architecture)
    chex.assert_trees_all_equal(back, jax.tree.map(np.asarray, variables))


def test_paper_code_names():
    assert interop.torch_name("vgg13", "params", ("conv3", "kernel")) == "layers.3.conv1.weight"
    assert interop.torch_name("vgg13", "batch_stats", ("bn9", "var")) == "layers.9.bn1.running_var"
    assert interop.torch_name("resnet18", "params", ("stem_bn", "scale")) == "bn1.weight"
    assert (
        interop.torch_name("resnet18", "params", ("stage1_block0", "shortcut_conv", "kernel"))
        == "layer2.0.shortcut_conv.weight"
    )
    assert (
        interop.torch_name("resnet18", "params", ("classifier", "dense", "bias")) == "linear.bias"
    )


def test_mismatched_state_dicts_are_clear_errors():
    state_dict = interop.variables_to_torch(_random_variables("vgg13"), "vgg13")
    with pytest.raises(InputError, match="unknown architecture 'vgg16'"):
        interop.variables_from_torch(state_dict, "vgg16")
    with pytest.raises(InputError, match=r"state_dict has no 'layer1\.0\."):
        interop.variables_from_torch(state_dict, "resnet18")
    wrong = {**state_dict, "layers.0.conv1.weight": np.zeros((32, 3, 3, 3), np.float32)}
    with pytest.raises(InputError, match="'layers.0.conv1.weight' has shape"):
        interop.variables_from_torch(wrong, "vgg13")
    with pytest.raises(InputError, match="unknown to vgg13: extra.weight"):
        interop.variables_from_torch({**state_dict, "extra.weight": np.zeros(3)}, "vgg13")
