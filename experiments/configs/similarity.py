"""Mechanistic similarity of N trained models: the linear-path barrier between every pair
on each counterfactual condition, N×N matrices, heatmaps ordered by clustering, clusters.

    python -m experiments.similarity \
        --models=θ_C=workdirs/cbft/seed_0/cue_model,FT=workdirs/cbft/seed_0/naive_ft_small,\
CBFT=workdirs/cbft/seed_0/cbft,LPFT=workdirs/cbft/seed_0/lpft --workdir=workdirs/similarity

A model is any folder holding one (an ``experiments.train`` workdir or a model folder of
``experiments.cbft``), optionally named ``name=folder``.
"""

import ml_collections


def get_config():
    config = ml_collections.ConfigDict()
    config.conditions = "nocue,cue,randcue,randimg"
    config.num_points = 11           # points on each line, t = 0 ... 1
    config.num_eval = 0              # > 0: evaluate on the first num_eval test samples only
    config.bn = "recompute"          # interpolate | interpolate_ema | recompute
    config.bn_batches = 5            # clean training batches for the BN statistics
    config.batch_size = 500
    config.random_from = "set"       # randimg images / random domino cues: set | batch
    config.strategy = "auto"         # auto | map | vmap | shard_map
    config.cluster_threshold = 0.1   # models within this average loss barrier: one cluster
    config.seed = 0
    return config
