"""Mechanistic similarity after fine-tuning: the straight line from θ_C *and* from θ_NC to
every fine-tuned model (naive FT, LLRT, LPFT, CBFT), on all four conditions.

    python -m experiments.cbft --config=experiments/configs/cbft_paths.py \
        --workdir=workdirs/cbft_paths
    # the paper's setting (needs the TFDS data):
    python -m experiments.cbft --config=experiments/configs/cbft_paths.py:cifar10,vgg13,0.9 ...

Trains θ_NC (no cue) besides θ_C, then writes ``paths_to_cue_model.png`` and
``paths_to_nocue_model.png`` (a panel per condition, a curve per model) and a barrier table
per reference model in ``results.md``. The paper's claim: models that keep θ_C's mechanism
(naive FT) are linearly connected to θ_C and not to θ_NC; CBFT leaves θ_C's basin. Runtime
on a 2-core CPU: ~11 minutes.
"""

from experiments.configs import cbft, cbft_paper


def get_config(arg: str = ""):
    config = cbft_paper.get_config(arg) if arg else cbft.get_config()
    config.path.targets = ("cue_model", "nocue_model")
    config.path.conditions = "nocue,cue,randcue,randimg"
    return config
