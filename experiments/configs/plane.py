"""Loss and accuracy over the plane through three trained models, on a G×G grid.

    S=workdirs/cbft/seed_0
    python -m experiments.plane --models=θ_C=$S/cue_model,FT=$S/naive_ft_small,CBFT=$S/cbft \
        --workdir=workdirs/plane
"""

import ml_collections

from experiments.configs import evaluation


def get_config():
    config = ml_collections.ConfigDict()
    # path.num_points: G, grid points per side (G² points in one evaluation).
    config.path = evaluation.path_config(num_points=21)
    config.margin = 0.2              # grid beyond the models, as a fraction of their extent
    config.seed = 0
    return config
