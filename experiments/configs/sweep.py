"""A sweep (``python -m experiments.sweep``): how CBFT and naive fine-tuning fare as θ_C's cue
grows more predictive, on the embedded demo, three seeds.

    python -m experiments.sweep                                   # ./workdirs/sweep
    python -m experiments.sweep --config=experiments/configs/sweep.py:train \\
        --config.grid="data.cue_proportion=0.0,0.87 seed=0,1"     # sweep experiments.train

The grid: θ_C's cue proportion ∈ {0.6, 0.75, 0.87, 0.95} × seeds {0, 1, 2}, 12 runs of
``experiments.cbft`` (``config.base``; any of its fields can be swept or set with
``--config.base.<field>=...``). To fit 15 minutes on a 2-core CPU (``executor=auto``: worker
processes), each run is smaller than the cbft demo's: θ_C trains 6 epochs on 10,000 images,
naive fine-tuning and CBFT 10 epochs on 1,000 clean + 8,000 cued samples, paths at 5 points.
``sweep.png``: RI, RC and CBFT's barrier to θ_C against the cue proportion, a line per method
with its 95 % confidence band over the seeds.
"""

import ml_collections

from experiments.configs import cbft, demo


def cbft_base() -> ml_collections.ConfigDict:
    """The swept cbft config: the demo's, smaller (see above)."""
    config = cbft.get_config()
    config.cue_model.data.num_train = 10000
    config.cue_model.optim.epochs = 6
    config.methods = ("naive_ft_medium", "cbft")
    config.data.n_cue = 8000
    config.optim.epochs = 10
    config.path.num_points = 5
    return config


def get_config(arg: str = "cbft"):
    config = ml_collections.ConfigDict()
    config.entry = arg                   # the swept entry point: cbft | train
    if arg == "train":
        config.base = demo.get_config()
        config.grid = "data.cue_proportion=0.0,0.6,0.87,0.95 seed=0,1,2"
    elif arg == "cbft":
        config.base = cbft_base()
        config.grid = "cue_model.data.cue_proportion=0.6,0.75,0.87,0.95 seed=0,1,2"
    else:
        raise ValueError(f"the argument is the swept entry point, cbft or train; got {arg!r}")
    # The figure: metrics (nocue, cue, randcue, randimg: test accuracy; barrier: cbft's loss
    # barrier to θ_C) against a swept field ("" = the first numeric one).
    config.plot = ml_collections.ConfigDict()
    config.plot.x = ""
    config.plot.metrics = (
        ("randimg", "randcue", "barrier") if arg == "cbft" else ("nocue", "randcue", "randimg")
    )
    return config
