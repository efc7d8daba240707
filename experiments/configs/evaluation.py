"""The evaluation and alignment settings that the model-comparison configs (connectivity,
similarity, layerwise, plane) share."""


def add_settings(config):
    """Adds the evaluation fields to ``config`` and returns it."""
    config.conditions = "nocue,cue,randcue,randimg"
    config.num_points = 11           # points on each line, t = 0 ... 1
    config.num_eval = 0              # > 0: evaluate on the first num_eval test samples only
    config.bn = "recompute"          # interpolate | interpolate_ema | recompute | repair
    config.bn_batches = 5            # clean training batches for the BN statistics
    config.batch_size = 500
    config.random_from = "set"       # randimg images / random domino cues: set | batch
    config.strategy = "auto"         # auto | map | vmap | shard_map
    config.part_size = 64            # points per saved part: a killed run resumes after it
    config.seed = 0
    return config


def add_permutation_settings(config):
    """Adds how one model is aligned to another before interpolating; returns ``config``."""
    # weight (Git Re-Basin weight matching, default) | activation | greedy |
    # paper (the paper code's greedy per-layer activation matching, solved per batch)
    config.permutation = "weight"
    config.permute_residual = True   # False: residual streams stay unpermuted (branches only)
    config.match_batches = 0         # activation matching batches (0: 10; paper: 91)
    config.match_batch_size = 0      # their size (0: batch_size; paper: 128, shuffled)
    return config
