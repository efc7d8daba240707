"""CBFT beside the paper's baselines and the spurious-correlation field's: nine methods on the
same data and budget, three seeds, mean ± 95 % confidence intervals.

    python -m experiments.cbft --config=experiments/configs/baselines.py \
        --workdir=workdirs/baselines
    # the paper's setting (needs the TFDS data):
    python -m experiments.cbft --config=experiments/configs/baselines.py:cifar10,vgg13,0.9 ...

Rows: the paper's five (naive FT at a small and a medium learning rate, LLRT, LP-FT, CBFT),
``scratch`` (Table 4), and ``dfr`` (Deep Feature Reweighting), ``jtt`` (Just Train Twice) and
``group_dro`` (Group DRO), whose groups are the (class, cue present) pairs of the fine-tuning
data (``mmc_jax.finetune.groups``). Columns: accuracy on the four counterfactual sets, the
worst (class, cue) group, the loss barrier to θ_C. The figure ``methods.png`` has a panel
per condition, a bar per method and the intervals as whiskers.
"""

from experiments.configs import cbft, cbft_paper

#: The methods, the paper's first.
METHODS = (
    "naive_ft_small",
    "naive_ft_medium",
    "llrt",
    "lpft",
    "cbft",
    "scratch",
    "dfr",
    "jtt",
    "group_dro",
)


def get_config(arg: str = ""):
    config = cbft_paper.get_config(arg) if arg else cbft.get_config()
    config.methods = METHODS
    config.seeds = (0, 1, 2)
    return config
