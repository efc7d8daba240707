"""Connectivity between two trained models: ``experiments.train`` workdirs or any model
folder of ``experiments.cbft`` (``<workdir>/seed_<s>/<cue_model|nocue_model|cbft|...>``).

    python -m experiments.connectivity --model_a=workdirs/demo_nc --model_b=workdirs/demo_c \
        --path=linear --workdir=workdirs/lmc
    ... --path=permuted_linear    # b aligned to a by weight matching first
    ... --path=permuted_linear --config.permutation=paper   # the paper code's matching
    ... --path=quadratic          # the control point trained first (on cued data by default)

    # every setting as the paper's code: BN by an EMA pass over the whole shuffled clean
    # training set in batches of 128, its greedy activation matching, random draws from the set
    ... --config=experiments/configs/connectivity.py:paper

Runtime (demo models, 2-core CPU): linear ~1 min, quadratic ~5 min.
"""

import ml_collections

from experiments.configs import evaluation


def get_config(arg: str = ""):
    if arg not in ("", "paper"):
        raise ValueError(f"connectivity config argument must be '' or 'paper', got {arg!r}")
    config = ml_collections.ConfigDict()
    config.num_points = 11           # t = 0, 0.1, ..., 1 (the paper's README: 11 points)
    config.conditions = "nocue,cue,randcue,randimg"
    config.eval_split = "test"       # the paper code's default is "train"; its README uses test
    config.num_eval = 0              # > 0: evaluate on the first num_eval samples only
    # BN along the path: interpolate | interpolate_ema (paper code) | recompute | repair
    config.bn = "recompute"
    config.bn_batches = 20           # clean training batches for the BN statistics (0: all)
    config.batch_size = 500
    config.bn_batch_size = 0         # BN passes' batch size (0: batch_size; paper code: 128)
    config.bn_shuffle = False        # BN batches from the shuffled training set (paper code)
    config.random_from = "set"       # randimg images / random domino cues: set (paper) | batch
    config.strategy = "auto"         # auto | map | vmap | shard_map
    config.chunk_size = 0            # points vectorized together (0: fitted to the budget)
    config.memory_budget_gib = 0.0   # working memory per device (0: half the device's)
    evaluation.add_permutation_settings(config)   # how permuted_linear aligns b to a
    # Quadratic path: midpoint training (the paper code's defaults).
    config.curve_cue_proportion = 1.0  # data the midpoint is fitted on: 1.0 cue, 0.0 clean
    config.curve_init = "random"     # random (paper code) | mean (endpoints' mean)
    config.curve_scale = "lr"        # lr: 2t(1-t) scales the step's lr (paper code) | gradient
    config.curve_epochs = 15
    config.curve_learning_rate = 0.1
    config.curve_step_every_epochs = 10
    config.curve_batch_size = 128
    config.seed = 0
    if arg == "paper":  # every setting as the paper's code (train_eval_mc.py) has it
        config.update(bn="interpolate_ema", bn_batches=0, bn_batch_size=128, bn_shuffle=True,
                      permutation="paper", random_from="set", curve_scale="lr")
    return config
