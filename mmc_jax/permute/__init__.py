"""Permutation symmetries of the models, and ways to align one trained model to another.

Permuting the hidden channels of a layer, consistently on every array that writes or reads
them, leaves a network's function unchanged. Aligning two networks through these symmetries
(weight or activation matching) is what linear mode connectivity after "re-basin" needs.

The symmetry is described as data, a :class:`PermutationSpec`: each named permutation lists
the ``(leaf path, axis)`` pairs it acts on, and each leaf of the variables lists, per axis, the
permutation acting there (a :class:`Blocks` when several act on parts of one axis, or None).
One module per job:

- :mod:`~mmc_jax.permute.spec`: the spec as data, :func:`validate` and :func:`apply`;
- :mod:`~mmc_jax.permute.trace`: the traced forward pass as groups of array axes that share a
  permutation (one rule per primitive), and the activations that read each group;
- :mod:`~mmc_jax.permute.derive`: :func:`derive_spec`, the spec of any Flax model from its
  trace;
- :mod:`~mmc_jax.permute.layouts`: :func:`spec_for`, the derived spec of the library's VGG,
  SmallCNN and ResNet checked against their hand-written layouts (and the paper code's
  activations), for any model whose variables have their layout (:func:`has_layout`);
- :mod:`~mmc_jax.permute.sites`: the activations of a spec's permutations, for activation
  matching;
- :mod:`~mmc_jax.permute.matching`: :func:`weight_matching`, :func:`activation_matching`,
  :func:`greedy_activation_matching` and :func:`paper_activation_matching`;
- :mod:`~mmc_jax.permute.orthogonal`: rotations of residual streams, a symmetry beyond
  permutations where no norm (or RMSNorm without a gain) is on the stream:
  :func:`orthogonal_alignment`, :func:`rotate`, :func:`check_rotation`.

>>> spec = derive_spec(model.apply, variables_a, x, train=False)   # or spec_for(model, a)
>>> perm = weight_matching(spec, variables_a, variables_b, jax.random.key(0))
>>> aligned_b = apply(spec, perm, variables_b)
"""

from mmc_jax.permute.derive import derive_spec
from mmc_jax.permute.layouts import has_layout, spec_for
from mmc_jax.permute.matching import (
    activation_matching,
    greedy_activation_matching,
    paper_activation_matching,
    weight_matching,
)
from mmc_jax.permute.orthogonal import check_rotation, orthogonal_alignment, rotate
from mmc_jax.permute.spec import Blocks, PermutationSpec, apply, validate

__all__ = [
    "Blocks",
    "PermutationSpec",
    "activation_matching",
    "apply",
    "check_rotation",
    "derive_spec",
    "greedy_activation_matching",
    "has_layout",
    "orthogonal_alignment",
    "paper_activation_matching",
    "rotate",
    "spec_for",
    "validate",
    "weight_matching",
]
