"""Per-layer barriers between two trained models: each layer interpolated alone from A to B,
the rest held at A (layer-wise linear mode connectivity).

    python -m experiments.layerwise --model_a=workdirs/cbft/seed_0/cue_model \
        --model_b=workdirs/cbft/seed_0/cbft --workdir=workdirs/layerwise
"""

import ml_collections

from experiments.configs import evaluation


def get_config():
    config = ml_collections.ConfigDict()
    config.path = evaluation.path_config()
    config.groups = ""               # comma-separated module names ("": every top-level module)
    config.seed = 0
    return config
