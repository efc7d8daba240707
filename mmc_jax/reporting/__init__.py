"""What a run leaves for people to read: atomic files, tables, plots, TensorBoard, timings.

- :mod:`~mmc_jax.reporting.files`: atomic writes (a failed write leaves the previous file
  whole), JSON and markdown results, figures, and the version of a run folder's layout;
- :mod:`~mmc_jax.reporting.tables`: the four counterfactual conditions as a markdown table;
- :mod:`~mmc_jax.reporting.plots`: the figures of every experiment (matplotlib);
- :mod:`~mmc_jax.reporting.tensorboard`: TensorBoard event files beside a run's results;
- :mod:`~mmc_jax.reporting.timing`: wall-clock and compile seconds of a run's phases.
"""

from mmc_jax.reporting import files, plots, tables, tensorboard, timing

__all__ = ["files", "plots", "tables", "tensorboard", "timing"]
