"""The :class:`Dataset` record and :func:`load`, the one entry point to every dataset.

Names:

- ``shapes10``: embedded procedural shapes (no download), the default for demos;
- ``cifar10``, ``cifar100``, ``fashion_mnist``: through ``tfds.data_source``;
- ``dominoes``: Fashion-MNIST on top of CIFAR-10 (64×32), or any two datasets with
  ``top=`` / ``bottom=`` options (e.g. ``top="shapes10"``);
- ``npz:<path>``: a user's arrays ``x_train, y_train, x_test, y_test``.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Optional

import numpy as np

from mmc_jax.data import dominoes as dominoes_lib
from mmc_jax.data import tfds_source
from mmc_jax.data.cache import cached_arrays
from mmc_jax.data.cues import Cue, DominoCue, box_cue
from mmc_jax.runtime.errors import InputError

SPLITS = ("train", "test")
NAMES = ("shapes10", "dominoes", *tfds_source.TFDS_DATASETS, "npz:<path>")
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
#: Default sizes of the embedded dataset.
SHAPES10_SIZES = {"train": 20_000, "test": 5_000}
#: Bumped whenever the generator's output changes, so stale cache entries are not reused.
SHAPES10_VERSION = 1


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """An immutable labelled image set.

    Attributes:
      images: uint8 array ``[N, H, W, C]`` (C = 3; read-only, possibly memory-mapped).
      labels: int32 array ``[N]`` with values in ``[0, num_classes)``.
      num_classes: number of classes.
      name: the name it was loaded under.
      cue: the cue that goes with these images (a box cue, or the domino cue for dominoes).
      class_names: optional human-readable name of each class.
    """

    images: np.ndarray
    labels: np.ndarray
    num_classes: int
    name: str
    cue: Optional[Cue] = None
    class_names: Optional[tuple[str, ...]] = None

    def __post_init__(self):
        check_arrays(self.images, self.labels, self.num_classes, self.name)
        if self.cue is None:
            object.__setattr__(self, "cue", box_cue(self.num_classes))

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(H, W, C)`` of every image."""
        return tuple(self.images.shape[1:])

    def take(self, indices) -> "Dataset":
        """The samples at ``indices`` (in that order), as a new in-memory Dataset."""
        indices = np.asarray(indices)
        return dataclasses.replace(
            self, images=np.asarray(self.images[indices]), labels=np.asarray(self.labels[indices])
        )


def check_arrays(images, labels, num_classes: int, what: str) -> None:
    """Raises InputError naming the problem unless images/labels form a valid dataset."""
    if not isinstance(images, np.ndarray) or images.ndim != 4:
        raise InputError(
            f"{what}: images must be a 4-d array [N, H, W, C], got shape {np.shape(images)}"
        )
    if images.dtype != np.uint8:
        raise InputError(f"{what}: images must be uint8, got {images.dtype}")
    if images.shape[-1] != 3:
        raise InputError(f"{what}: images must have 3 channels, got {images.shape[-1]}")
    if not isinstance(labels, np.ndarray) or labels.shape != images.shape[:1]:
        raise InputError(
            f"{what}: labels must have shape [{images.shape[0]}], got {np.shape(labels)}"
        )
    if labels.dtype != np.int32:
        raise InputError(f"{what}: labels must be int32, got {labels.dtype}")
    if num_classes < 1:
        raise InputError(f"{what}: num_classes must be positive, got {num_classes}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise InputError(
            f"{what}: labels must lie in [0, {num_classes}), got [{labels.min()}, {labels.max()}]"
        )


def load(name: str, split: str = "train", *, seed: int = 0, **options) -> Dataset:
    """Loads a dataset split by name.

    Args:
      name: ``"shapes10"``, ``"cifar10"``, ``"cifar100"``, ``"fashion_mnist"``,
        ``"dominoes"`` or ``"npz:<path>"``.
      split: ``"train"`` or ``"test"``.
      seed: generator seed of ``shapes10`` (train uses ``2 * seed``, test ``2 * seed + 1``);
        real datasets ignore it.
      **options:

        - ``num_examples`` (shapes10): split size, default 20,000 train / 5,000 test.
        - ``data_dir``: TFDS data folder for the real datasets.
        - ``top``, ``bottom`` (dominoes): dataset names, default ``fashion_mnist`` /
          ``cifar10``; ``data_dir`` and ``num_examples`` go to the parts that take them.
        - ``cache_dir``: cache folder override (default ``$MMC_JAX_CACHE``).

    Returns:
      A :class:`Dataset`.

    Raises:
      InputError: unknown name or split, unknown option, missing TFDS data (with the command
        that prepares it), or arrays of the wrong rank, dtype, shape or label range.
    """
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}; use 'train' or 'test'")
    if name == "shapes10":
        return _load_shapes10(split, seed, **options)
    if name in tfds_source.TFDS_DATASETS:
        return _load_tfds(name, split, **options)
    if name == "dominoes":
        return _load_dominoes(split, seed, **options)
    if isinstance(name, str) and name.startswith("npz:"):
        return _load_npz(name, split, **options)
    raise InputError(f"unknown dataset {name!r}; choose from {', '.join(NAMES)}")


def describe(
    name: str, *, top: str = "fashion_mnist", bottom: str = "cifar10", **options
) -> Optional[tuple[int, tuple[int, int, int]]]:
    """``(num_classes, image_shape)`` of the dataset :func:`load` would return, known from the
    dataset's declaration alone (nothing generated, read or downloaded); ``None`` for an npz
    dataset, whose file has to be read. ``top`` / ``bottom``: the parts of ``dominoes``;
    other ``load`` options do not change the answer."""
    del options
    if name == "shapes10":
        from mmc_jax.data import shapes

        return len(shapes.CLASS_NAMES), tuple(shapes.IMAGE_SHAPE)
    if name in tfds_source.TFDS_DATASETS:
        return tfds_source.TFDS_DATASETS[name], tfds_source.IMAGE_SHAPES[name]
    if name == "dominoes":
        below = describe(bottom)
        if below is None or describe(top) is None:
            return None
        num_classes, (height, width, _) = below
        return num_classes, (width + height, width, 3)  # a width × width top above
    return None


def _check_options(name: str, options: dict, allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise InputError(
            f"{name}: unknown option(s) {', '.join(unknown)}; allowed: "
            f"{', '.join(allowed) or 'none'}"
        )


def _load_shapes10(
    split: str, seed: int, num_examples: int | None = None, cache_dir: str | None = None, **options
) -> Dataset:
    from mmc_jax.data import shapes

    _check_options("shapes10", options, ())
    n = SHAPES10_SIZES[split] if num_examples is None else int(num_examples)
    if n < 1:
        raise InputError(f"shapes10: num_examples must be positive, got {num_examples}")
    split_seed = 2 * int(seed) + SPLITS.index(split)

    def build():
        images, labels = shapes.generate(n, split_seed)
        return {"images": images, "labels": labels}

    key = f"shapes10-v{SHAPES10_VERSION}-n{n}-seed{split_seed}"
    arrays = cached_arrays(key, build, cache_dir)
    return Dataset(
        arrays["images"],
        arrays["labels"],
        len(shapes.CLASS_NAMES),
        "shapes10",
        class_names=tuple(shapes.CLASS_NAMES),
    )


def _load_tfds(
    name: str, split: str, data_dir: str | None = None, cache_dir: str | None = None, **options
) -> Dataset:
    _check_options(name, options, ())
    images, labels = tfds_source.load_tfds(name, split, data_dir, cache_dir)
    if images.shape[-1] == 1:  # Fashion-MNIST is grey: cues are coloured.
        images = np.repeat(images, 3, axis=-1)
    return Dataset(
        images,
        labels,
        tfds_source.TFDS_DATASETS[name],
        name,
        class_names=tfds_source.CLASS_NAMES.get(name),
    )


def _load_dominoes(
    split: str, seed: int, top: str = "fashion_mnist", bottom: str = "cifar10", **options
) -> Dataset:
    _check_options("dominoes", options, ("data_dir", "cache_dir", "num_examples"))
    if "dominoes" in (top, bottom):
        raise InputError("dominoes: top and bottom must be plain datasets")

    def part(name: str, part_seed: int) -> Dataset:
        part_options = dict(options)
        if name not in tfds_source.TFDS_DATASETS:
            part_options.pop("data_dir", None)
        if name != "shapes10":
            part_options.pop("num_examples", None)
        return load(name, split, seed=part_seed, **part_options)

    # A different seed keeps the top images of a procedural dataset distinct from the bottom.
    top_set, bottom_set = part(top, seed + 1000), part(bottom, seed)
    if top_set.num_classes != bottom_set.num_classes:
        raise InputError(
            f"dominoes: {top} has {top_set.num_classes} classes but {bottom} has "
            f"{bottom_set.num_classes}"
        )
    images = dominoes_lib.stack(
        top_set.images, top_set.labels, bottom_set.images, bottom_set.labels
    )
    return Dataset(
        images,
        np.asarray(bottom_set.labels),
        bottom_set.num_classes,
        "dominoes",
        cue=DominoCue(rows=bottom_set.images.shape[2]),
        class_names=bottom_set.class_names,
    )


def _npz_problem(err: Exception) -> str:
    """Why a file is not an npz archive, in a few words."""
    text = (str(err).splitlines() or [type(err).__name__])[0]
    return "not an npz archive" if "pickle" in text else text[:120]


def _load_npz(name: str, split: str, num_classes: Optional[int] = None, **options) -> Dataset:
    _check_options("npz", options, ())
    path = pathlib.Path(name[len("npz:") :]).expanduser()
    if not path.is_file():
        raise InputError(f"npz dataset file not found: {path}")
    try:
        arrays = np.load(path, allow_pickle=False)
        if not isinstance(arrays, np.lib.npyio.NpzFile):
            raise ValueError("an array, not an archive of arrays")
    except (OSError, ValueError, EOFError) as err:
        raise InputError(
            f"{path} cannot be read as an npz dataset ({_npz_problem(err)}); "
            f"write one with numpy.savez({', '.join(f'{k}=...' for k in NPZ_KEYS)})"
        ) from None
    with arrays:
        missing = [key for key in NPZ_KEYS if key not in arrays.files]
        if missing:
            raise InputError(
                f"{path}: missing array(s) {', '.join(missing)}; an npz dataset "
                f"needs {', '.join(NPZ_KEYS)}"
            )
        images = arrays[f"x_{split}"]
        labels = arrays[f"y_{split}"]
        all_labels = np.concatenate([arrays["y_train"].ravel(), arrays["y_test"].ravel()])
    what = f"{path} ({split})"
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise InputError(
            f"{what}: x_{split} must be uint8 [N, H, W, 1 or 3], got shape {images.shape}"
        )
    if images.dtype != np.uint8:
        raise InputError(f"{what}: x_{split} must be uint8, got {images.dtype}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"{what}: y_{split} must hold integer labels, got {labels.dtype}")
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    if num_classes is None:
        num_classes = int(all_labels.max()) + 1 if all_labels.size else 1
    return Dataset(images, labels.astype(np.int32).reshape(-1), int(num_classes), f"npz:{path}")
