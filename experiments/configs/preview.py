"""Preview a dataset and its cue under the four counterfactual conditions.

    python -m experiments.preview --workdir=workdirs/preview
    python -m experiments.preview --config.dataset=dominoes --config.dominoes_top=shapes10 \
        --config.dominoes_bottom=shapes10

Runtime: ~15 s for shapes10 on a 2-core CPU the first time (generation), ~2 s after.
"""

import ml_collections


def get_config():
    config = ml_collections.ConfigDict()
    # shapes10 | cifar10 | cifar100 | fashion_mnist | dominoes | npz:<path>
    config.dataset = "shapes10"
    config.data_dir = ""            # TFDS data folder for the real datasets ("" = TFDS default)
    config.dominoes_top = "fashion_mnist"
    config.dominoes_bottom = "cifar10"
    config.cue_proportion = 0.9     # fraction of each training class that carries the cue
    config.data_seed = 0            # seed of the procedural dataset
    config.num_train = 0            # > 0: only the first num_train training samples
    config.num_test = 0             # > 0: only the first num_test test samples
    config.seed = 0
    config.num_samples = 10         # columns of the preview grid
    return config
