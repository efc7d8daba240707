"""The evaluation settings that the model-comparison configs (similarity, layerwise)
share."""


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
    config.seed = 0
    return config
