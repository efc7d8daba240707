"""The paper's Fig. 5: naive fine-tuning of θ_C on clean data at a small, medium and large
learning rate (0.001, 0.01, 0.1), then the straight line θ_C → θ_FT on all four conditions.

    python -m experiments.cbft --config=experiments/configs/fig5.py --workdir=workdirs/fig5
    # the paper's setting (CIFAR-10, VGG-13, θ_C at p = 0.9; needs the TFDS data):
    python -m experiments.cbft --config=experiments/configs/fig5.py:cifar10,vgg13,0.9 ...
    # reuse a θ_C trained before (e.g. by the main job) instead of training one:
    ... --config.cue_model_dir=workdirs/cbft/seed_0/cue_model

Writes ``paths_to_cue_model.png`` (a panel per condition, a curve per learning rate),
``results.json`` and ``results.md`` (the four conditions per model, and the loss and
accuracy barriers on the line from θ_C per condition). As in the paper, fine-tuning runs for
100 epochs (on the ``data.n_clean`` clean samples). Expected on the demo: small and medium
learning rates stay linearly connected to θ_C on every condition and keep reading the cue
(high RI); the large one leaves θ_C's basin (a barrier on the cued data) and drops the cue.
Runtime on a 2-core CPU: ~7.5 minutes (θ_C ~2 of them).
"""

from experiments.configs import cbft, cbft_paper


def get_config(arg: str = ""):
    config = cbft_paper.get_config(arg) if arg else cbft.get_config()
    config.methods = ("naive_ft_small", "naive_ft_medium", "naive_ft_large")
    config.optim.epochs = 100
    config.path.conditions = "nocue,cue,randcue,randimg"
    if arg:
        config.seeds = (0,)
    return config
