"""Permutation specs derived from the traced forward pass: equal to the hand-derived specs
of the library's models, and exact symmetries of models written only here (MLP with
LayerNorm, attention, pre-activation residual blocks, arbitrary module names); unsupported
ops are reported, or raise with ``strict=True``."""

import dataclasses

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmc_jax import InputError, models, permute


class MLP(nn.Module):
    """Dense → LayerNorm → GELU twice, on flattened images."""

    @nn.compact
    def __call__(self, x, train=False):
        x = x.reshape(x.shape[0], -1)
        for i, width in enumerate((32, 24)):
            x = nn.gelu(nn.LayerNorm(name=f"norm_{i}")(nn.Dense(width, name=f"fc_{i}")(x)))
        return nn.Dense(10, name="readout")(x)


class TinyViT(nn.Module):
    """Patch embedding, one pre-LN block with multi-head attention and an MLP, mean pool."""

    @nn.compact
    def __call__(self, x, train=False):
        x = nn.Conv(16, (4, 4), strides=(4, 4), name="patchify")(x)
        x = x.reshape(x.shape[0], -1, x.shape[-1])
        x = x + nn.MultiHeadDotProductAttention(num_heads=2, name="mhsa")(
            nn.LayerNorm(name="ln_a")(x)
        )
        h = nn.relu(nn.Dense(32, name="up")(nn.LayerNorm(name="ln_b")(x)))
        x = x + nn.Dense(16, name="down")(h)
        return nn.Dense(10, name="cls")(nn.LayerNorm(name="ln_f")(x).mean(1))


class PreActBlocks(nn.Module):
    """Two pre-activation residual blocks (BN → ReLU → conv) on a stem, BatchNorm stats."""

    @nn.compact
    def __call__(self, x, train=False):
        norm = lambda name: nn.BatchNorm(use_running_average=not train, name=name)  # noqa: E731
        x = nn.Conv(8, (3, 3), name="stem")(x)
        for b in range(2):
            h = nn.Conv(12, (3, 3), name=f"b{b}_c1")(nn.relu(norm(f"b{b}_n1")(x)))
            x = x + nn.Conv(8, (3, 3), name=f"b{b}_c2")(nn.relu(norm(f"b{b}_n2")(h)))
        return nn.Dense(10, name="fc")(nn.relu(norm("final")(x)).mean((1, 2)))


class GroupNormNet(nn.Module):
    """GroupNorm after the first convolution: its channels are 2 groups × 4."""

    @nn.compact
    def __call__(self, x, train=False):
        x = nn.GroupNorm(num_groups=2, name="gn")(nn.Conv(8, (3, 3), name="c0")(x))
        x = nn.relu(nn.Conv(8, (3, 3), name="c1")(nn.relu(x)))
        return nn.Dense(10, name="out")(x.mean((1, 2)))


class ConcatFlatten(nn.Module):
    """Two branches concatenated along channels, then a strided conv whose output is
    flattened (height × width × channels) into a dense layer."""

    @nn.compact
    def __call__(self, x, train=False):
        left = nn.relu(nn.Conv(6, (3, 3), name="left")(x))
        right = nn.relu(nn.Conv(5, (3, 3), name="right")(x))
        h = nn.relu(nn.Conv(7, (3, 3), strides=2, name="mix")(jnp.concatenate([left, right], -1)))
        h = nn.relu(nn.Dense(9, name="fc")(h.reshape(h.shape[0], -1)))
        return nn.Dense(10, name="out")(h)


class CumsumNet(nn.Module):
    """A cumulative sum over channels, which no permutation rule covers."""

    @nn.compact
    def __call__(self, x, train=False):
        x = jnp.cumsum(nn.Conv(8, (3, 3), name="c0")(x), axis=-1)
        x = nn.relu(nn.Conv(8, (3, 3), name="c1")(nn.relu(x)))
        return nn.Dense(10, name="out")(x.mean((1, 2)))


class ConvNeXtBlock(nn.Module):
    """A ConvNeXt-style block: depthwise 7×7 convolution, LayerNorm, inverted MLP, residual."""

    @nn.compact
    def __call__(self, x, train=False):
        x = nn.Conv(8, (3, 3), name="stem")(x)
        h = nn.Conv(8, (7, 7), feature_group_count=8, name="dw")(x)
        h = nn.gelu(nn.Dense(16, name="up")(nn.LayerNorm(name="ln")(h)))
        x = x + nn.Dense(8, name="down")(h)
        return nn.Dense(10, name="head")(x.mean((1, 2)))


class GroupedConv(nn.Module):
    """A convolution in 2 feature groups of 4 → 6 channels (a ResNeXt-style layer)."""

    @nn.compact
    def __call__(self, x, train=False):
        x = nn.relu(nn.Conv(8, (3, 3), name="c0")(x))
        x = nn.relu(nn.Conv(12, (3, 3), feature_group_count=2, name="grouped")(x))
        return nn.Dense(10, name="head")(x.mean((1, 2)))


class FusedQKV(nn.Module):
    """Attention whose q, k and v come from one projection split with ``jnp.split``, each
    reshaped into 2 heads of 8."""

    @nn.compact
    def __call__(self, x, train=False):
        x = nn.Conv(16, (4, 4), strides=(4, 4), name="patchify")(x)
        x = x.reshape(x.shape[0], -1, 16)
        q, k, v = jnp.split(nn.Dense(48, name="qkv")(nn.LayerNorm(name="ln")(x)), 3, axis=-1)
        heads = lambda t: t.reshape(*t.shape[:2], 2, 8)  # noqa: E731
        att = nn.dot_product_attention(heads(q), heads(k), heads(v))
        x = x + nn.Dense(16, name="proj")(att.reshape(*x.shape[:2], 16))
        return nn.Dense(10, name="head")(x.mean(1))


class GatedMLP(nn.Module):
    """A gated MLP: one projection sliced into value and gate halves, multiplied unit by
    unit (GEGLU), in a residual block."""

    @nn.compact
    def __call__(self, x, train=False):
        x = nn.Dense(12, name="fc0")(x.reshape(x.shape[0], -1))
        h = nn.Dense(20, name="gate_up")(x)
        x = x + nn.Dense(12, name="down")(h[..., :10] * nn.gelu(h[..., 10:]))
        return nn.Dense(10, name="head")(x)


class ClassToken(nn.Module):
    """A class token concatenated before the patches and sliced out for the head
    (``x[:, 0]``: a slice of the token axis, which stays unpermuted)."""

    @nn.compact
    def __call__(self, x, train=False):
        x = nn.Conv(16, (4, 4), strides=(4, 4), name="patchify")(x)
        x = x.reshape(x.shape[0], -1, 16)
        cls = self.param("cls", nn.initializers.normal(1.0), (1, 1, 16))
        x = jnp.concatenate([jnp.broadcast_to(cls, (x.shape[0], 1, 16)), x], axis=1)
        x = x + nn.MultiHeadDotProductAttention(num_heads=2, name="mhsa")(
            nn.LayerNorm(name="ln")(x)
        )
        return nn.Dense(10, name="head")(x[:, 0])


class PixelTokens(nn.Module):
    """Pixels quantized into 8 tokens, embedded (``nn.Embed``: a gather from its table), a
    dense layer, mean over positions."""

    @nn.compact
    def __call__(self, x, train=False):
        tokens = jnp.clip(((x[..., 0] + 2.0) * 2.0).astype(jnp.int32), 0, 7)
        h = nn.relu(nn.Dense(12, name="fc")(nn.Embed(8, 16, name="embed")(tokens)))
        return nn.Dense(10, name="head")(h.mean((1, 2)))


def _setup(module, shape=(4, 16, 16, 3)):
    x = jax.random.normal(jax.random.key(1), shape)
    variables = models.init(module, jax.random.key(0), shape[1:])
    if "batch_stats" in variables:  # non-trivial statistics, so they must be permuted too
        variables = {
            **variables,
            "batch_stats": jax.tree.map(
                lambda s: s + jax.random.uniform(jax.random.key(2), s.shape),
                variables["batch_stats"],
            ),
        }
    return x, variables


def _planted_is_recovered(spec, apply_fn, variables, *inputs, seed=0, exact=False, reference=None):
    """Plants random derived permutations: asserts the outputs stay equal (1e-5) and that
    weight matching (against ``reference``, default ``variables``) recovers the variables
    (exactly, or within 1e-6); returns the permuted variables."""
    rng = np.random.default_rng(seed)
    planted = {name: jnp.asarray(rng.permutation(n)) for name, n in spec.sizes.items()}
    permuted = permute.apply(spec, planted, variables)
    chex.assert_trees_all_close(
        apply_fn(permuted, *inputs), apply_fn(variables, *inputs), atol=1e-5
    )
    reference = variables if reference is None else reference
    found = permute.weight_matching(spec, reference, permuted, jax.random.key(3))
    recovered = permute.apply(spec, found, permuted)
    if exact:
        chex.assert_trees_all_equal(recovered, variables)
    else:
        chex.assert_trees_all_close(recovered, variables, atol=1e-6)
    return permuted


def _groups(spec):
    return {frozenset(axes) for axes in spec.perm_to_axes.values()}


def _hand_written_groups(model, variables):
    """The groups the library's layouts describe by hand (producers' every leaf on its last
    axis, consumers' kernels on their input axis): an independent reference for the trace."""
    from mmc_jax.permute import layouts

    leaves = [path for path, _ in jax.tree_util.tree_flatten_with_path(variables)[0]]
    paths = {
        "/".join(k.key for k in path): np.ndim(x)
        for path, x in zip(leaves, jax.tree_util.tree_leaves(variables))
    }
    groups = set()
    for group in layouts.layout_groups(model, variables):
        axes = {
            (p, n - 1)
            for p, n in paths.items()
            for module in group.producers
            if p.split("/", 1)[1].startswith(module + "/")
        }
        axes |= {
            (f"params/{module}/kernel", paths[f"params/{module}/kernel"] - 2)
            for module in group.consumers
        }
        groups.add(frozenset(axes))
    return groups


@pytest.mark.parametrize(
    "name,width", [("cnn4", 0.25), ("vgg13_small", None), ("resnet18_small", None)]
)
def test_library_models_derive_their_hand_written_spec(name, width):
    model = models.create(name, 10, width=width, conv_impl="xla")
    variables = models.init(model, jax.random.key(0), (32, 32, 3))
    spec = permute.derive_spec(model.apply, variables, jnp.zeros((2, 32, 32, 3)), train=False)
    assert _groups(spec) == _hand_written_groups(model, variables)
    assert spec.unsupported == ()
    named = permute.spec_for(model, variables)  # the same spec, checked against the layout
    assert named == spec and {"P_conv0", "P_stem_conv"} & set(named.sizes)


@pytest.mark.parametrize(
    "module,expected",
    [
        (MLP(), [32, 24]),
        (TinyViT(), [16, 32, 2, 8, 8]),  # stream, MLP, heads, q/k and v/out head dims
        (PreActBlocks(), [8, 12, 12]),  # stream, each block's inner channels
        (GroupNormNet(), [2, 4, 8]),  # c0: groups × channels within a group; c1
        (ConcatFlatten(), [6, 5, 7, 9]),  # each branch, mix (inside the flattening), fc
        (ConvNeXtBlock(), [8, 16]),  # stream (through the depthwise conv), MLP
        (GroupedConv(), [2, 4, 6]),  # c0: groups × within a group; grouped: within a group
        (FusedQKV(), [16, 2, 8, 8]),  # stream, heads, q/k and v head dims
        (GatedMLP(), [12, 10]),  # stream, gated units (both halves alike)
        (PixelTokens(), [16, 12]),  # embedding features, fc
        (ClassToken(), [16, 2, 8, 8]),  # stream, heads, q/k and v head dims
    ],
    ids=lambda m: type(m).__name__ if isinstance(m, nn.Module) else None,
)
def test_derived_permutations_are_symmetries_and_weight_matching_recovers_them(module, expected):
    x, variables = _setup(module)
    spec = permute.derive_spec(module.apply, variables, x)
    assert sorted(spec.sizes.values()) == sorted(expected) and spec.unsupported == ()
    _planted_is_recovered(spec, module.apply, variables, x)


def test_split_axes_get_blocks_of_permutations():
    x, variables = _setup(GroupNormNet())
    spec = permute.derive_spec(GroupNormNet().apply, variables, x)
    groups = permute.Blocks("factors", (2, 4), ("P_c0.0", "P_c0.1"))
    for leaf in ("params/gn/scale", "params/gn/bias", "params/c0/bias"):
        assert spec.axes_to_perm[leaf] == (groups,)
    assert spec.axes_to_perm["params/c1/kernel"] == (None, None, groups, "P_c1")
    x, variables = _setup(ConcatFlatten())
    spec = permute.derive_spec(ConcatFlatten().apply, variables, x)
    assert spec.axes_to_perm["params/mix/kernel"][2:] == (
        permute.Blocks("segments", (6, 5), ("P_left", "P_right")),
        "P_mix",
    )
    # fc reads height × width × channels: only the channels (mix's units) are permuted.
    assert spec.axes_to_perm["params/fc/kernel"] == (
        permute.Blocks("factors", (8, 8, 7), (None, None, "P_mix")),
        "P_fc",
    )


@pytest.mark.parametrize(
    "module,stream",
    [(TinyViT(), "P_patchify"), (PreActBlocks(), "P_stem")],
    ids=["TinyViT", "PreActBlocks"],
)
def test_residual_streams_can_stay_unpermuted(module, stream):
    x, variables = _setup(module)
    full = permute.derive_spec(module.apply, variables, x)
    spec = permute.derive_spec(module.apply, variables, x, residual_stream=False)
    assert stream in full.sizes and set(spec.sizes) == set(full.sizes) - {stream}
    rng = np.random.default_rng(2)
    perm = {name: jnp.asarray(rng.permutation(n)) for name, n in spec.sizes.items()}
    chex.assert_trees_all_close(
        module.apply(permute.apply(spec, perm, variables), x), module.apply(variables, x), atol=1e-5
    )


def test_blocks_are_validated():
    x, variables = _setup(GroupNormNet())
    spec = permute.derive_spec(GroupNormNet().apply, variables, x)
    bad = {
        **spec.axes_to_perm,
        "params/gn/scale": (permute.Blocks("factors", (2, 3), ("P_c0.0", "P_c0.1")),),
    }
    with pytest.raises(InputError, match=r"params/gn/scale has size 8, its factors \(2, 3\)"):
        permute.validate(dataclasses.replace(spec, axes_to_perm=bad), variables)


def test_unsupported_ops_are_reported_or_raise_when_strict():
    module = CumsumNet()
    x, variables = _setup(module)
    spec = permute.derive_spec(module.apply, variables, x)
    assert list(spec.sizes.values()) == [8] and "params/c1/kernel" in dict(
        spec.perm_to_axes["P_c1"]
    )  # c1 only; c0 feeds the cumsum
    assert spec.unsupported == ("cumsum((4, 16, 16, 8))",)
    with pytest.raises(InputError, match=r"unsupported op cumsum.* touches .*params/c0/"):
        permute.derive_spec(module.apply, variables, x, strict=True)


@pytest.mark.parametrize(
    "method", [permute.activation_matching, permute.greedy_activation_matching]
)
@pytest.mark.parametrize(
    "module",
    [
        MLP(),
        PreActBlocks(),
        GroupNormNet(),
        ConcatFlatten(),
        TinyViT(),
        ConvNeXtBlock(),
        GroupedConv(),
        FusedQKV(),
        GatedMLP(),
        PixelTokens(),
    ],
    ids=lambda m: type(m).__name__,
)
def test_activation_matching_finds_its_sites_in_the_trace(module, method):
    x, variables = _setup(module)
    spec = permute.derive_spec(module.apply, variables, x)
    rng = np.random.default_rng(4)
    planted = {name: jnp.asarray(rng.permutation(n)) for name, n in spec.sizes.items()}
    permuted = permute.apply(spec, planted, variables)
    batches = [jax.random.normal(jax.random.key(i), (8, 16, 16, 3)) for i in (5, 6)]
    found = method(spec, module.apply, variables, permuted, batches)
    chex.assert_trees_all_close(permute.apply(spec, found, permuted), variables, atol=1e-6)


@pytest.mark.parametrize("name", ["cnn4", "resnet18_small"])
def test_traced_sites_are_the_hand_written_sites(name):
    """The trace's sites of a library model are its documented activations: the per-site
    moments equal those from ``capture_intermediates`` of the hand-written layout."""
    from mmc_jax.permute import layouts, matching

    model = models.create(name, 10, width=0.25, conv_impl="xla")
    a = models.init(model, jax.random.key(0), (16, 16, 3))
    b = models.init(model, jax.random.key(1), (16, 16, 3))
    spec = permute.spec_for(model, a)
    images = jax.random.normal(jax.random.key(2), (4, 16, 16, 3))
    names = layouts.spec_names(spec, layouts.layout_groups(model, a))
    groups = [dataclasses.replace(g, perm=names[g.perm]) for g in layouts.layout_groups(model, a)]
    hand = matching._moments_fn(matching._module_activations(model, groups))
    traced = matching._moments_fn(matching.TracedActivations(spec, model, a))
    chex.assert_trees_all_close(traced(a, b, images), hand(a, b, images), atol=1e-4)


@pytest.mark.parametrize("name", ["mlp", "vit_tiny", "wrn", "wrn_gn"])
def test_presets_beyond_the_paper_have_exact_derived_symmetries(name):
    model = models.create(name, 10, width=0.25, conv_impl="xla")
    x = jax.random.normal(jax.random.key(1), (4, 32, 32, 3))
    variables = models.init(model, jax.random.key(0), (32, 32, 3))
    spec = permute.derive_spec(model.apply, variables, x, train=False)
    assert spec.sizes and spec.unsupported == ()
    rng = np.random.default_rng(1)
    perm = {p: jnp.asarray(rng.permutation(n)) for p, n in spec.sizes.items()}
    permuted = permute.apply(spec, perm, variables)
    chex.assert_trees_all_close(
        model.apply(permuted, x, train=False), model.apply(variables, x, train=False), atol=1e-5
    )
    found = permute.weight_matching(spec, variables, permuted, jax.random.key(3))
    chex.assert_trees_all_close(permute.apply(spec, found, permuted), variables, atol=1e-6)


def test_groupnorm_preset_permutes_groups_and_channels_within_them():
    model = models.create("wrn_gn", 10, width=0.5, conv_impl="xla")
    variables = models.init(model, jax.random.key(0), (32, 32, 3))
    spec = permute.derive_spec(model.apply, variables, jnp.zeros((2, 32, 32, 3)), train=False)
    assert spec.unsupported == ()
    # Every layer (16, 32 and 64 channels) feeds a GroupNorm of 8 groups.
    kernel = spec.axes_to_perm["params/stage1_block0_conv1/kernel"][3]
    assert kernel.kind == "factors" and kernel.sizes == (8, 4)
    assert sorted(spec.sizes.values()) == sorted([8, 2, 8, 2] + [8, 4, 8, 4] + [8, 8, 8, 8])


def test_models_without_batchnorm_train_save_and_load(tmp_path):
    from configs import train_config
    from mmc_jax import training

    config = train_config(
        model="mlp",
        width=0.25,
        num_train=128,
        num_test=40,
        batch_size=64,
        epochs=1,
        eval_batch_size=40,
    )
    state = training.train_and_evaluate(config, str(tmp_path / "run"), progress=False)["state"]
    assert state.batch_stats == {}
    training.save_model(tmp_path / "export", config, state.variables, 10, (32, 32, 3))
    _, restored, _ = training.load_model(tmp_path / "run")
    _, exported, _ = training.load_model(tmp_path / "export")
    chex.assert_trees_all_equal(restored["params"], state.params)
    chex.assert_trees_all_equal(exported["params"], state.params)


def test_fused_and_gated_projections_nest_and_share_their_permutations():
    x, variables = _setup(FusedQKV())
    spec = permute.derive_spec(FusedQKV().apply, variables, x)
    fused = spec.axes_to_perm["params/qkv/kernel"][1]
    assert (fused.kind, fused.sizes) == ("segments", (16, 16, 16))
    q, k, v = fused.perms
    assert all(isinstance(p, permute.Blocks) and p.sizes == (2, 8) for p in (q, k, v))
    assert q == k and v.perms[0] == q.perms[0] and v.perms[1] != q.perms[1]  # heads shared
    x, variables = _setup(GatedMLP())
    spec = permute.derive_spec(GatedMLP().apply, variables, x)
    gated = spec.axes_to_perm["params/gate_up/kernel"][1]
    assert gated.sizes == (10, 10) and gated.perms[0] == gated.perms[1] is not None


class TokenClassifier(nn.Module):
    """Token ids → ``nn.Embed`` → dense → mean over the sequence → classes."""

    @nn.compact
    def __call__(self, tokens, train=False):
        h = nn.relu(nn.Dense(12, name="fc")(nn.Embed(50, 16, name="embed")(tokens)))
        return nn.Dense(3, name="head")(h.mean(1))


def test_token_embeddings_permute_their_features_not_their_tokens():
    module = TokenClassifier()
    tokens = jax.random.randint(jax.random.key(1), (4, 7), 0, 50)
    variables = module.init(jax.random.key(0), tokens)
    spec = permute.derive_spec(module.apply, variables, tokens)
    assert spec.axes_to_perm["params/embed/embedding"] == (None, "P_embed")
    assert spec.unsupported == () and sorted(spec.sizes.values()) == [12, 16]
    _planted_is_recovered(spec, module.apply, variables, tokens, seed=5, exact=True)


class _ResidualBlock(nn.Module):
    """LayerNorm → dense → ReLU → dense, added to the stream."""

    @nn.compact
    def __call__(self, x, _=None):
        h = nn.relu(nn.Dense(6, name="up")(nn.LayerNorm(name="ln")(x)))
        return x + nn.Dense(4, name="down")(h), None


class ScannedBlocks(nn.Module):
    """Three residual blocks stacked with ``nn.scan`` (their weights on a leading axis)."""

    @nn.compact
    def __call__(self, x, train=False):
        x = nn.Dense(4, name="embed")(x.reshape(x.shape[0], -1))
        blocks = nn.scan(
            _ResidualBlock, variable_axes={"params": 0}, split_rngs={"params": True}, length=3
        )
        x, _ = blocks(name="blocks")(x, None)
        return nn.Dense(10, name="out")(x)


class UnrolledBlocks(nn.Module):
    """:class:`ScannedBlocks` written out, one module per block."""

    @nn.compact
    def __call__(self, x, train=False):
        x = nn.Dense(4, name="embed")(x.reshape(x.shape[0], -1))
        for k in range(3):
            x, _ = _ResidualBlock(name=f"blocks_{k}")(x)
        return nn.Dense(10, name="out")(x)


class LaxScanBlocks(nn.Module):
    """Stacked weights declared by hand and looped over with ``jax.lax.scan``."""

    @nn.compact
    def __call__(self, x, train=False):
        x = nn.Dense(4, name="embed")(x.reshape(x.shape[0], -1))
        init = nn.initializers.lecun_normal(batch_axis=(0,))
        up, down = self.param("up", init, (3, 4, 6)), self.param("down", init, (3, 6, 4))

        def block(x, weights):
            return x + nn.relu(x @ weights[0]) @ weights[1], None

        x, _ = jax.lax.scan(block, x, (up, down))
        return nn.Dense(10, name="out")(x)


def _unrolled(variables):
    """A :class:`ScannedBlocks`' variables as its :class:`UnrolledBlocks` twin's."""
    params = dict(variables["params"])
    blocks = params.pop("blocks")
    for k in range(3):
        params[f"blocks_{k}"] = jax.tree.map(lambda x, k=k: x[k], blocks)
    return {"params": params}


@pytest.mark.parametrize(
    "module", [ScannedBlocks(), LaxScanBlocks()], ids=lambda m: type(m).__name__
)
def test_scanned_layers_get_a_permutation_each(module):
    x, variables = _setup(module, (4, 4, 4, 3))
    spec = permute.derive_spec(module.apply, variables, x)
    assert spec.unsupported == () and sorted(spec.sizes.values()) == [4, 6, 6, 6]
    assert all(n == 3 for n in spec.stacked.values()) and spec.stacked
    permuted = _planted_is_recovered(spec, module.apply, variables, x)
    batches = [jax.random.normal(jax.random.key(i), (32, 4, 4, 3)) for i in (7, 8)]
    found = permute.activation_matching(spec, module.apply, variables, permuted, batches)
    chex.assert_trees_all_close(permute.apply(spec, found, permuted), variables, atol=1e-6)


def test_a_scanned_model_aligns_as_its_unrolled_twin():
    scanned, unrolled = ScannedBlocks(), UnrolledBlocks()
    x = jax.random.normal(jax.random.key(1), (16, 4, 4, 3))
    a, b = (scanned.init(jax.random.key(s), x) for s in (0, 1))
    spec_s = permute.derive_spec(scanned.apply, a, x)
    spec_u = permute.derive_spec(unrolled.apply, _unrolled(a), x)
    assert sorted(spec_s.sizes.values()) == sorted(spec_u.sizes.values())
    assert "P_blocks/up[2]" in spec_s.sizes and "P_blocks_2/up" in spec_u.sizes
    key = jax.random.key(4)
    aligned_s = permute.apply(spec_s, permute.weight_matching(spec_s, a, b, key), b)
    aligned_u = permute.apply(
        spec_u, permute.weight_matching(spec_u, _unrolled(a), _unrolled(b), key), _unrolled(b)
    )
    chex.assert_trees_all_close(_unrolled(aligned_s), aligned_u, atol=1e-6)
    labels = jnp.arange(16) % 10

    def losses(model, end_a, end_b):  # the loss along the linear path: its barrier
        at = lambda t: jax.tree.map(lambda p, q: (1 - t) * p + t * q, end_a, end_b)  # noqa: E731
        return jnp.stack(
            [_cross_entropy(model.apply(at(t), x), labels) for t in jnp.linspace(0.0, 1.0, 5)]
        )

    chex.assert_trees_all_close(
        losses(scanned, a, aligned_s), losses(unrolled, _unrolled(a), aligned_u), atol=1e-5
    )
    assert not np.allclose(losses(scanned, a, aligned_s), losses(scanned, a, b))


def _cross_entropy(logits, labels):
    """Mean cross-entropy of integer labels."""
    return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(len(labels)), labels])


def test_an_nnx_model_gets_its_permutations_named_after_its_attributes():
    from flax import nnx

    class Net(nnx.Module):
        """Conv → BatchNorm → ReLU, a residual conv, a list of dense layers (NNX)."""

        def __init__(self, rngs):
            self.conv1 = nnx.Conv(3, 8, (3, 3), rngs=rngs)
            self.norm1 = nnx.BatchNorm(8, use_running_average=True, rngs=rngs)
            self.conv2 = nnx.Conv(8, 8, (3, 3), rngs=rngs)
            self.layers = nnx.List([nnx.Linear(8, 12, rngs=rngs), nnx.Linear(12, 10, rngs=rngs)])

        def __call__(self, x):
            x = nnx.relu(self.norm1(self.conv1(x)))
            x = (x + self.conv2(x)).mean((1, 2))
            return self.layers[1](nnx.relu(self.layers[0](x)))

    module = Net(nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (4, 8, 8, 3))
    spec = permute.derive_spec(module, x)  # an nnx.Module for (apply_fn, variables)
    apply_fn, variables = models.nnx_bridge.from_module(module)
    assert sorted(spec.sizes) == ["P_conv1", "P_layers/0"] and spec.unsupported == ()
    assert spec.streams == ("P_conv1",)
    chex.assert_trees_all_close(apply_fn(variables, x), module(x), atol=1e-6)
    permuted = _planted_is_recovered(spec, apply_fn, variables, x, reference=module)
    batches = [jax.random.normal(jax.random.key(i), (32, 8, 8, 3)) for i in (5, 6)]
    found = permute.activation_matching(spec, module, module, permuted, batches)
    aligned = permute.apply(spec, found, permuted)  # the stream's units all fire: recovered
    chex.assert_trees_all_close(aligned["params"]["conv1"], variables["params"]["conv1"])
