"""The paper's Table 3 (CBFT without its barrier term, without its invariance term) and
Table 4 (a model trained from scratch on the ``data.n_clean`` clean samples alone).

    python -m experiments.cbft --config=experiments/configs/ablations.py \
        --workdir=workdirs/ablations
    # the paper's setting (needs the TFDS data):
    python -m experiments.cbft --config=experiments/configs/ablations.py:cifar10,vgg13,0.9 ...

Rows: CBFT, ``cbft_no_barrier`` (barrier weight 0: the barrier step is skipped),
``cbft_no_invariance`` (invariance weight 0), ``scratch`` (a fresh model with θ_C's training
recipe for ``baselines.scratch_epochs`` epochs on the same random draw of clean samples the
fine-tuning uses), and medium-LR naive FT for reference. Expected (the paper's findings):
without the barrier term the model stays in θ_C's basin and keeps the cue; without the
invariance term it leaves the basin but need not become cue-invariant; from scratch, clean
accuracy is far below fine-tuning's. Runtime on a 2-core CPU: ~6.5 minutes.
"""

from experiments.configs import cbft, cbft_paper


def get_config(arg: str = ""):
    config = cbft_paper.get_config(arg) if arg else cbft.get_config()
    config.methods = ("naive_ft_medium", "cbft", "cbft_no_barrier", "cbft_no_invariance",
                      "scratch")
    return config
