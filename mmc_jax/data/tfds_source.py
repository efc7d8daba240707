"""CIFAR-10/100 and Fashion-MNIST through ``tfds.data_source`` (array_record, no TensorFlow).

TensorFlow is needed once, to prepare the files (see docs/getting_started.md, "Real
datasets"); reading them afterwards needs only ``tensorflow-datasets`` and ``array_record``.
Decoded arrays are cached on disk (``mmc_jax.data.cache``) and read back lazily.
"""

from __future__ import annotations

import hashlib
import os
from typing import Optional

import numpy as np

from mmc_jax.runtime.errors import InputError

#: tfds name -> number of classes of its ``label`` feature.
TFDS_DATASETS = {"cifar10": 10, "cifar100": 100, "fashion_mnist": 10}
#: tfds name -> ``(H, W, C)`` of its images as ``data.load`` returns them (grey as RGB).
IMAGE_SHAPES = {"cifar10": (32, 32, 3), "cifar100": (32, 32, 3), "fashion_mnist": (28, 28, 3)}
#: Class names, where short enough to label plots.
CLASS_NAMES = {
    "cifar10": (
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ),
    "fashion_mnist": (
        "T-shirt",
        "trouser",
        "pullover",
        "dress",
        "coat",
        "sandal",
        "shirt",
        "sneaker",
        "bag",
        "ankle boot",
    ),
}

PREPARE_HINT = (
    "prepare it once with: pip install tensorflow && "
    "tfds build {name} --file_format=array_record{data_dir_flag}"
)


def _open(name: str, split: str, data_dir: Optional[str]):
    try:  # only real datasets need it: an extra, mmc_jax[tfds]
        import tensorflow_datasets as tfds
    except ImportError:
        raise InputError(
            f"{name} is read through TensorFlow Datasets, which is not installed: "
            "pip install 'mmc_jax[tfds]' (or tensorflow-datasets and "
            "array-record)"
        ) from None

    try:
        return tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    except Exception as err:  # tfds raises several unrelated types for "not prepared".
        flag = f" --data_dir={data_dir}" if data_dir else ""
        where = data_dir or os.environ.get("TFDS_DATA_DIR", "~/tensorflow_datasets")
        raise InputError(
            f"{name} ({split}) is not available as array_record under {where} "
            f"({type(err).__name__}: {str(err).splitlines()[0][:160]}); "
            + PREPARE_HINT.format(name=name, data_dir_flag=flag)
        ) from None


def _read_all(source, description: str) -> dict[str, np.ndarray]:
    from tqdm.auto import tqdm

    n = len(source)
    first = source[0]
    images = np.empty((n,) + np.shape(first["image"]), np.uint8)
    labels = np.empty((n,), np.int32)
    for i in tqdm(
        range(n), desc=description, unit="img", leave=False, mininterval=1.0, disable=n < 5000
    ):
        record = source[i]
        images[i] = record["image"]
        labels[i] = record["label"]
    return {"images": images, "labels": labels}


def _fingerprint(source) -> str:
    """Identifies the prepared files, so that mock data and real data never share a cache
    entry: their folder, size, and first and last images."""
    info = getattr(source, "dataset_info", None)
    digest = hashlib.sha1(f"{getattr(info, 'data_dir', '')}|{len(source)}".encode())
    for i in (0, len(source) - 1):
        digest.update(np.ascontiguousarray(source[i]["image"]).tobytes())
    return digest.hexdigest()[:12]


def load_tfds(
    name: str, split: str, data_dir: Optional[str] = None, cache: Optional[str] = None
) -> tuple[np.ndarray, np.ndarray]:
    """Images ``uint8 [N, H, W, C]`` and labels ``int32 [N]`` of a prepared TFDS dataset.

    Args:
      name: one of :data:`TFDS_DATASETS`.
      split: ``"train"`` or ``"test"``.
      data_dir: TFDS data folder (default: TFDS's own, ``$TFDS_DATA_DIR``).
      cache: cache folder override for the decoded arrays.

    Raises:
      InputError: the dataset is not prepared, with the command that prepares it.
    """
    from mmc_jax.data.cache import cached_arrays

    source = _open(name, split, data_dir)
    key = f"tfds-{name}-{split}-{_fingerprint(source)}"
    arrays = cached_arrays(key, lambda: _read_all(source, f"decoding {name} {split}"), cache)
    return arrays["images"], arrays["labels"]
