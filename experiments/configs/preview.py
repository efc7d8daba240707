"""Preview a dataset and its cue under the four counterfactual conditions.

    python -m experiments.preview --workdir=workdirs/preview
    python -m experiments.preview --config.data.name=dominoes \
        --config.data.dominoes_top=shapes10 --config.data.dominoes_bottom=shapes10

Runtime: ~15 s for shapes10 on a 2-core CPU the first time (generation), ~2 s after.
"""

import ml_collections

from experiments.configs import demo


def get_config():
    config = ml_collections.ConfigDict()
    config.data = demo.data_config(cue_proportion=0.9)   # the training data section
    config.seed = 0
    config.num_samples = 10         # columns of the preview grid
    return config
