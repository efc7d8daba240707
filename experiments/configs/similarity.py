"""Mechanistic similarity of N trained models: the linear-path barrier between every pair
on each counterfactual condition, N×N matrices, heatmaps ordered by clustering, clusters.

    python -m experiments.similarity \
        --models=θ_C=workdirs/cbft/seed_0/cue_model,FT=workdirs/cbft/seed_0/naive_ft_small,\
CBFT=workdirs/cbft/seed_0/cbft,LPFT=workdirs/cbft/seed_0/lpft --workdir=workdirs/similarity

A model is any folder holding one (an ``experiments.train`` workdir or a model folder of
``experiments.cbft``), optionally named ``name=folder``.
"""

import ml_collections

from experiments.configs import evaluation


def get_config():
    config = ml_collections.ConfigDict()
    config.path = evaluation.path_config()
    config.permutation = evaluation.permutation_config()
    config.cluster_threshold = 0.1   # models within this average loss barrier: one cluster
    config.permuted = False          # True: each pair's second model aligned to the first
    config.seed = 0
    return config
