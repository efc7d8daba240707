"""The sections that the model-comparison configs (connectivity, similarity, layerwise,
plane) and ``experiments.cbft`` share: ``path`` (how models and paths are evaluated) and
``permutation`` (how one model is aligned to another)."""

import ml_collections


def path_config(**changes) -> ml_collections.ConfigDict:
    """The ``path`` section (``changes`` replace defaults)."""
    path = ml_collections.ConfigDict()
    path.conditions = "nocue,cue,randcue,randimg"
    path.num_points = 11             # points on each line, t = 0 ... 1
    path.eval_split = "test"         # data evaluated on: test | train
    path.num_eval = 0                # > 0: evaluate on the first num_eval samples only
    # BN along the path: interpolate | interpolate_ema (paper code) | recompute | repair
    path.bn = "recompute"
    path.bn_batches = 5              # clean training batches for the BN statistics (0: all)
    path.batch_size = 500
    path.bn_batch_size = 0           # BN passes' batch size (0: batch_size; paper code: 128)
    path.bn_shuffle = False          # BN batches from the shuffled training set (paper code)
    path.random_from = "set"         # randimg images / random domino cues: set (paper) | batch
    path.redraw = False              # True: new random draws at every path point (paper code)
    # Cued conditions (cue, randcue, randimg) stamp the cue on this fraction of each class,
    # the rest stay cue-free: the paper's fine-tuning script's test sets at --cue_proportion.
    path.cue_proportion = 1.0
    path.strategy = "auto"           # auto | map | vmap | shard_map
    path.chunk_size = 0              # points vectorized together (0: fitted to the budget)
    path.memory_budget_gib = 0.0     # working memory per device (0: half the device's)
    path.part_size = 64              # points per saved part: a killed run resumes after it
    path.update(changes)
    return path


def permutation_config() -> ml_collections.ConfigDict:
    """The ``permutation`` section."""
    permutation = ml_collections.ConfigDict()
    # weight (Git Re-Basin weight matching, default) | activation | greedy |
    # paper (the paper code's greedy per-layer activation matching, solved per batch)
    permutation.method = "weight"
    permutation.permute_residual = True   # False: residual streams stay unpermuted
    # Then rotate residual streams (orthogonal Procrustes): none | weight | activation; for
    # streams under RMSNorm without a gain or no norm (e.g. vit_tiny_rms).
    permutation.orthogonal = "none"
    permutation.match_batches = 0         # activation matching batches (0: 10; paper: 91)
    permutation.match_batch_size = 0      # their size (0: path.batch_size; paper: 128)
    return permutation

