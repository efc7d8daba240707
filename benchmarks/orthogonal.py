"""Barriers between two independently trained models after no alignment, permutations, and
permutations composed with rotations of the residual stream (``permutation.orthogonal``).

    python benchmarks/orthogonal.py [--quick] [--models vit_tiny_rms,vit_tiny,mlp] [--epochs 8]

Each model is trained twice from different seeds (AdamW on the embedded shapes10, no cue;
``--epochs``), then the linear path between the two is
evaluated on clean test images (11 points) after each alignment. Rotations apply only where
they are symmetries: ``vit_tiny_rms`` (RMSNorm without a gain on its stream); ``vit_tiny``
(LayerNorm) and ``mlp`` (no residual stream) get "—".

Prints a markdown table and writes ``benchmarks/results/orthogonal.json``.
"""

from __future__ import annotations

import time

import common
import jax
import optax

from mmc_jax import InputError, data, metrics, models, paths, permute
from mmc_jax.connectivity import path_eval
from mmc_jax.permute import orthogonal


def trained(name: str, seed: int, epochs: int, train, test):
    """Model ``name`` trained from ``seed`` on clean images with AdamW (lr 1e-3, cosine,
    batch 128; SGD trains the attention models far slower): ``(model, variables, clean
    test accuracy)``."""
    model = models.create(name, 10)
    variables = models.init(model, jax.random.key(seed), train.image_shape)
    batches = data.EpochIterator(
        {"images": train.images, "labels": train.labels}, batch_size=128, seed=seed
    )
    tx = optax.adamw(optax.cosine_decay_schedule(1e-3, epochs * batches.steps_per_epoch), 1e-3)

    @jax.jit
    def step(params, opt, images, labels):
        def loss(p):
            logits = model.apply({**variables, "params": p}, data.clean_inputs(train.cue, images))
            return metrics.cross_entropy(logits, labels)

        grads = jax.grad(loss)(params)
        updates, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), opt

    params = variables["params"]
    opt = tx.init(params)
    for epoch in range(epochs):
        for batch in batches.epoch(epoch):
            params, opt = step(params, opt, batch["images"], batch["labels"])
    variables = {**variables, "params": params}
    accuracy = metrics.evaluate(
        model.apply, variables, test, jax.random.key(0), conditions=("nocue",)
    )
    return model, variables, 100 * accuracy["nocue"]["acc"]


def barrier(model, a, b, test) -> float:
    """The loss barrier (nats) of the linear path from ``a`` to ``b`` on clean test images."""
    result = path_eval.evaluate_path(
        model.apply,
        paths.linear(a, b),
        paths.grid(11),
        test,
        conditions=("nocue",),
        bn="interpolate",
        batch_size=500,
    )
    return result.barriers("nocue")["loss"]


def alignments(model, a, b, train):
    """Each alignment of ``b`` to ``a`` (None where it does not apply)."""
    x = data.clean_inputs(train.cue, train.images[:256])
    spec = permute.derive_spec(model.apply, a, x[:2], train=False)
    key = jax.random.key(0)

    def match(a, b):
        return permute.weight_matching(spec, a, b, key)

    out = {"none": b, "permutation": permute.apply(spec, match(a, b), b)}
    try:
        for stream in spec.streams:
            permute.check_rotation(spec, stream, model.apply, a, x[:8], train=False)
        if not spec.streams:
            raise InputError("no residual stream")
    except InputError:
        return out | {"perm_rot_weights": None, "perm_rot_activations": None}
    batches = [x[:128], x[128:]]
    out["perm_rot_weights"] = orthogonal.align(spec, a, b, match)
    out["perm_rot_activations"] = orthogonal.align(spec, a, b, match, model=model, batches=batches)
    return out


def main():
    parser = common.parser(__doc__, "2 epochs on 4,000 images")
    parser.add_argument("--models", default="vit_tiny_rms,vit_tiny,mlp")
    parser.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args()
    epochs, num_train = (2, 4000) if args.quick else (args.epochs, 20000)
    train = data.load("shapes10", "train", num_examples=num_train)
    test = data.load("shapes10", "test", num_examples=1000)
    rows = []
    for name in args.models.split(","):
        start = time.perf_counter()
        model, a, acc_a = trained(name, 0, epochs, train, test)
        _, b, acc_b = trained(name, 1, epochs, train, test)
        row = {"model": name, "test_acc": [round(acc_a, 1), round(acc_b, 1)]}
        for label, aligned in alignments(model, a, b, train).items():
            row[label] = None if aligned is None else round(barrier(model, a, aligned, test), 4)
        row["seconds"] = round(time.perf_counter() - start, 1)
        rows.append(row)
        print(row, flush=True)
    print(f"\nmachine: {common.machine()}\n")
    print(
        "| model | clean test acc (two seeds) | no alignment | permutations | "
        "+ rotations (weights) | + rotations (activations) |"
    )
    print("|---|---|---|---|---|---|")
    cell = lambda v: "—" if v is None else f"{v:.3f}"  # noqa: E731
    for r in rows:
        print(
            f"| {r['model']} | {r['test_acc'][0]:.1f} / {r['test_acc'][1]:.1f} % | "
            f"{cell(r['none'])} | {cell(r['permutation'])} | {cell(r['perm_rot_weights'])} | "
            f"{cell(r['perm_rot_activations'])} |"
        )
    print(f"\nwrote {common.save('orthogonal', {'epochs': epochs, 'rows': rows})}")


if __name__ == "__main__":
    main()
