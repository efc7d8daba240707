"""Per-layer barriers between two trained models: each layer interpolated alone from A to B,
the rest held at A (layer-wise linear mode connectivity).

    python -m experiments.layerwise --model_a=workdirs/cbft/seed_0/cue_model \
        --model_b=workdirs/cbft/seed_0/cbft --workdir=workdirs/layerwise
"""

import ml_collections

from experiments.configs import evaluation


def get_config():
    config = evaluation.add_settings(ml_collections.ConfigDict())
    config.groups = ""               # comma-separated module names ("": every top-level module)
    return config
