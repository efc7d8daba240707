"""On-disk cache of generated or decoded arrays, read back lazily as memory maps.

The cache lives in ``$MMC_JAX_CACHE`` (default ``~/.cache/mmc_jax``). Entries are written to a
temporary folder and renamed into place, so an interrupted write never leaves a partial entry;
a cache that cannot be written (a full disk, a read-only home) keeps the arrays in memory.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import tempfile
from typing import Callable, Mapping, Optional

import numpy as np
from absl import logging

from mmc_jax.runtime.settings import cache_dir


def cached_arrays(
    name: str, build: Callable[[], Mapping[str, np.ndarray]], directory: Optional[str] = None
) -> dict[str, np.ndarray]:
    """Returns the arrays cached under ``name``, building and storing them on first use.

    Args:
      name: a file-system-safe key that identifies the content (include every parameter).
      build: computes the arrays when they are not cached yet.
      directory: cache folder override (see :func:`cache_dir`).

    Returns:
      dict of read-only memory-mapped arrays (pages are read from disk as they are used).
    """
    entry = cache_dir(directory) / name
    if not entry.is_dir():
        arrays = build()
        try:
            _store(entry, arrays)
        except OSError as err:  # a full disk or a read-only cache: the arrays are still here
            reason = err.strerror or str(err) or type(err).__name__
            logging.warning(f"dataset cache {entry} cannot be written ({reason}); kept in memory")
            return {key: np.asarray(value) for key, value in sorted(arrays.items())}
    return {path.stem: np.load(path, mmap_mode="r") for path in sorted(entry.glob("*.npy"))}


def _store(entry: pathlib.Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Writes the arrays as ``entry/<key>.npy`` through a temporary folder renamed into place."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{entry.name}.", dir=entry.parent))
    try:
        for key, value in arrays.items():
            np.save(tmp / f"{key}.npy", np.ascontiguousarray(value))
        os.replace(tmp, entry)
    except OSError:
        if not entry.is_dir():  # a concurrent writer did not win the race either
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
