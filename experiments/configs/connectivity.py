"""Connectivity between two trained models: ``experiments.train`` workdirs or any model
folder of ``experiments.cbft`` (``<workdir>/seed_<s>/<cue_model|nocue_model|cbft|...>``).

    python -m experiments.connectivity --model_a=workdirs/demo_nc --model_b=workdirs/demo_c \
        --path=linear --workdir=workdirs/lmc
    ... --path=permuted_linear    # b aligned to a by weight matching first
    ... --path=permuted_linear --config.permutation.method=paper   # the paper code's matching
    ... --path=quadratic          # the control point trained first (on cued data by default)

    # every setting as the paper's code: BN by an EMA pass over the whole shuffled clean
    # training set in batches of 128, its greedy activation matching, random draws from the set
    ... --config=experiments/configs/connectivity.py:paper

Sections: ``path`` (evaluation along the path), ``permutation`` (how permuted_linear aligns b
to a), ``curve`` (the quadratic path's control-point training,
``mmc_jax.connectivity.curve.CurveConfig``).
Runtime (demo models, 2-core CPU): linear ~1 min, quadratic ~5 min.
"""

import ml_collections

from experiments.configs import evaluation


def get_config(arg: str = ""):
    if arg not in ("", "paper"):
        raise ValueError(f"connectivity config argument must be '' or 'paper', got {arg!r}")
    config = ml_collections.ConfigDict()
    # 11 points (the paper's README); test data (the paper code's default is "train"; its
    # README uses test); 20 BN batches.
    config.path = evaluation.path_config(bn_batches=20)
    config.permutation = evaluation.permutation_config()
    # Quadratic path: control-point training (the paper code's defaults).
    config.curve = ml_collections.ConfigDict()
    config.curve.cue_proportion = 1.0   # data the control point is fitted on: 1 cue, 0 clean
    config.curve.init = "random"        # random (paper code) | mean (endpoints' mean)
    config.curve.scale = "lr"           # lr: 2t(1-t) scales the step's lr (paper) | gradient
    config.curve.optim = ml_collections.ConfigDict()  # SGD, x0.1 every step_every_epochs
    config.curve.optim.epochs = 15
    config.curve.optim.batch_size = 128
    config.curve.optim.learning_rate = 0.1
    config.curve.optim.momentum = 0.9
    config.curve.optim.weight_decay = 1e-4
    config.curve.optim.schedule = "step"
    config.curve.optim.step_every_epochs = 10
    config.curve.optim.step_factor = 0.1
    config.seed = 0
    if arg == "paper":  # every setting as the paper's code (train_eval_mc.py) has it
        config.path.update(bn="interpolate_ema", bn_batches=0, bn_batch_size=128,
                           bn_shuffle=True, random_from="set", redraw=True)
        config.permutation.method = "paper"
        config.curve.scale = "lr"
    return config
