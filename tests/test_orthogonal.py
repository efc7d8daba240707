"""Rotations of residual streams: a symmetry where no norm (or RMSNorm without a gain) sits on
the stream, refused where LayerNorm or a gain breaks it, and recovered by orthogonal
Procrustes after the permutations, on weights or on activations."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmc_jax import InputError, models, permute
from mmc_jax.permute import orthogonal


class NoNormResidual(nn.Module):
    """A residual MLP with no normalisation: dense writers and readers of one stream."""

    gain: bool = False

    @nn.compact
    def __call__(self, x, train=False):
        x = nn.Dense(12, name="embed")(x.reshape(x.shape[0], -1))
        for i in range(2):
            h = nn.RMSNorm(use_scale=self.gain, name=f"norm{i}")(x)
            x = x + nn.Dense(12, name=f"down{i}")(nn.relu(nn.Dense(20, name=f"up{i}")(h)))
        return nn.Dense(10, name="head")(x)


def _setup(module, shape=(8, 4, 4, 3)):
    x = jax.random.normal(jax.random.key(1), shape)
    variables = dict(module.init(jax.random.key(0), x))
    spec = permute.derive_spec(module.apply, variables, x)
    return x, variables, spec


@pytest.mark.parametrize("preset", [False, True])
def test_rotations_of_the_stream_are_symmetries_and_are_recovered(preset):
    if preset:
        module = models.create("vit_tiny_rms", 10, width=0.25)
        x = jax.random.normal(jax.random.key(1), (4, 16, 16, 3))
        variables = models.init(module, jax.random.key(0), (16, 16, 3))
        spec = permute.derive_spec(module.apply, variables, x, train=False)
    else:
        module = NoNormResidual()
        x, variables, spec = _setup(module)
    (stream,) = spec.streams
    rotation = orthogonal.random_rotation(jax.random.key(2), spec.sizes[stream])
    chex.assert_trees_all_close(rotation @ rotation.T, jnp.eye(len(rotation)), atol=1e-5)
    rng = np.random.default_rng(3)
    planted = {n: jnp.asarray(rng.permutation(k)) for n, k in spec.sizes.items()}
    moved = permute.rotate(spec, stream, rotation, permute.apply(spec, planted, variables))
    chex.assert_trees_all_close(module.apply(moved, x), module.apply(variables, x), atol=1e-5)
    # Permutations alone cannot undo a rotation; rotations composed with them can.
    perm = permute.weight_matching(spec, variables, moved, jax.random.key(4))
    pairs = zip(jax.tree.leaves(permute.apply(spec, perm, moved)), jax.tree.leaves(variables))
    assert not all(np.allclose(p, v, atol=1e-3) for p, v in pairs)
    model = module if preset else module.apply
    for kwargs in ({}, {"model": model, "batches": [x, 2 * x]}):
        match = lambda a, b: permute.weight_matching(spec, a, b, jax.random.key(4))  # noqa: E731
        back = orthogonal.align(spec, variables, moved, match, **kwargs)
        chex.assert_trees_all_close(back, variables, atol=2e-4)


def test_a_gain_on_the_stream_or_layernorm_breaks_the_rotation_symmetry():
    x, variables, spec = _setup(NoNormResidual(gain=True))
    (stream,) = spec.streams
    with pytest.raises(InputError, match="not rotation invariant"):
        permute.check_rotation(spec, stream, NoNormResidual(gain=True).apply, variables, x)
    x, variables, spec = _setup(NoNormResidual())
    permute.check_rotation(spec, stream, NoNormResidual().apply, variables, x)
    module = models.create("vit_tiny", 10, width=0.25)
    variables = models.init(module, jax.random.key(0), (16, 16, 3))
    x = jax.random.normal(jax.random.key(1), (2, 16, 16, 3))
    spec = permute.derive_spec(module.apply, variables, x, train=False)
    with pytest.raises(InputError, match="only permutations align it"):
        permute.check_rotation(spec, spec.streams[0], module.apply, variables, x, train=False)


def test_rotation_inputs_are_checked():
    x, variables, spec = _setup(NoNormResidual())
    with pytest.raises(InputError, match="no permutation 'P_nope'"):
        permute.rotate(spec, "P_nope", jnp.eye(3), variables)
    with pytest.raises(InputError, match="must be 12×12"):
        permute.rotate(spec, spec.streams[0], jnp.eye(3), variables)
    assert orthogonal.procrustes(np.diag([3.0, 2.0, 1.0])) == pytest.approx(np.eye(3))
