"""Loading: embedded shapes10, TFDS through mock data, dominoes, npz, and bad input."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from mmc_jax import InputError, data
from mmc_jax.data import dominoes, shapes


def test_shapes10_is_balanced_seeded_and_cached(tmp_path):
    a = data.load("shapes10", "train", num_examples=200, cache_dir=str(tmp_path))
    assert (a.images.shape, a.images.dtype, a.labels.dtype) == (
        (200, 32, 32, 3),
        np.uint8,
        np.int32,
    )
    assert np.bincount(a.labels).tolist() == [20] * 10
    assert a.class_names == shapes.CLASS_NAMES and a.num_classes == 10
    assert isinstance(a.images, np.memmap)  # read back lazily from the cache
    fresh = shapes.generate(200, 0)  # train split of seed 0 uses generator seed 0
    np.testing.assert_array_equal(a.images, fresh[0])
    np.testing.assert_array_equal(a.labels, fresh[1])
    test = data.load("shapes10", "test", num_examples=200, cache_dir=str(tmp_path))
    other = data.load("shapes10", "train", seed=1, num_examples=200, cache_dir=str(tmp_path))
    assert not np.array_equal(a.images, test.images)
    assert not np.array_equal(a.images, other.images)


def test_shapes10_generation_does_not_depend_on_earlier_calls():
    first = shapes.generate(30, 7)
    shapes.generate(50, 8)
    again = shapes.generate(30, 7)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])


@pytest.mark.parametrize(
    "name,num_classes", [("cifar10", 10), ("cifar100", 100), ("fashion_mnist", 10)]
)
def test_tfds_datasets_through_mock_data(name, num_classes):
    with tfds.testing.mock_data(num_examples=24):
        ds = data.load(name, "test")
    assert ds.images.shape[0] == 24 and ds.images.shape[-1] == 3  # grey → RGB
    assert ds.images.dtype == np.uint8 and ds.labels.dtype == np.int32
    assert ds.num_classes == num_classes and 0 <= ds.labels.min() <= ds.labels.max() < num_classes
    assert ds.cue == data.box_cue(num_classes)
    with tfds.testing.mock_data(num_examples=24):
        source = tfds.data_source(name, split="test")
        np.testing.assert_array_equal(ds.labels[:5], [source[i]["label"] for i in range(5)])
        first = np.asarray(source[0]["image"])
    np.testing.assert_array_equal(ds.images[0], np.broadcast_to(first, ds.images[0].shape))


def test_missing_tfds_data_says_how_to_prepare(tmp_path):
    with pytest.raises(
        InputError,
        match=r"cifar10 \(train\) is not available.*tfds build "
        r"cifar10 --file_format=array_record",
    ):
        data.load("cifar10", data_dir=str(tmp_path))


def test_dominoes_pair_class_by_class():
    top_labels = np.array([1, 0, 1, 0, 1])
    bottom_labels = np.array([0, 1, 1, 0, 0, 1, 1])
    pairs = dominoes.pair_by_class(top_labels, bottom_labels)
    # i-th bottom of class c gets the i-th top of class c, cycling.
    assert pairs.tolist() == [1, 0, 2, 3, 1, 4, 0]
    np.testing.assert_array_equal(top_labels[pairs], bottom_labels)


def test_dominoes_from_fashion_mnist_and_cifar10_mock():
    with tfds.testing.mock_data(num_examples=40):
        dom = data.load("dominoes", "train")
        cifar = data.load("cifar10", "train")
        fmnist = data.load("fashion_mnist", "train")
    assert dom.images.shape == (40, 64, 32, 3) and dom.cue == data.DominoCue(rows=32)
    np.testing.assert_array_equal(dom.images[:, 32:], cifar.images)
    np.testing.assert_array_equal(dom.labels, cifar.labels)
    pairs = dominoes.pair_by_class(fmnist.labels, cifar.labels)
    expected_top = dominoes.to_rgb_square(fmnist.images[pairs], 32)
    np.testing.assert_array_equal(dom.images[:, :32], expected_top)


def test_dominoes_on_embedded_data():
    dom = data.load("dominoes", "test", top="shapes10", bottom="shapes10", num_examples=50)
    bottom = data.load("shapes10", "test", num_examples=50)
    assert dom.images.shape == (len(bottom), 64, 32, 3)
    np.testing.assert_array_equal(dom.images[:, 32:], bottom.images)
    assert not np.array_equal(dom.images[:, :32], bottom.images)  # tops come from another seed


def test_to_rgb_square_resizes_grey():
    grey = np.full((2, 28, 28, 1), 200, np.uint8)
    out = dominoes.to_rgb_square(grey, 32)
    assert out.shape == (2, 32, 32, 3) and out.dtype == np.uint8
    assert (out == 200).all()


def _save_npz(path, **overrides):
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 256, (12, 16, 16, 3), dtype=np.uint8),
        "y_train": rng.integers(0, 4, 12),
        "x_test": rng.integers(0, 256, (6, 16, 16, 3), dtype=np.uint8),
        "y_test": rng.integers(0, 4, 6),
    }
    arrays.update(overrides)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    np.savez(path, **arrays)
    return arrays


def test_npz_round_trip(tmp_path):
    arrays = _save_npz(tmp_path / "mine.npz")
    train = data.load(f"npz:{tmp_path / 'mine.npz'}", "train")
    test = data.load(f"npz:{tmp_path / 'mine.npz'}", "test")
    np.testing.assert_array_equal(train.images, arrays["x_train"])
    np.testing.assert_array_equal(test.labels, arrays["y_test"])
    assert train.num_classes == max(arrays["y_train"].max(), arrays["y_test"].max()) + 1


def test_npz_grey_images_become_rgb(tmp_path):
    grey = np.arange(4 * 8 * 8, dtype=np.uint8).reshape(4, 8, 8, 1)
    _save_npz(tmp_path / "g.npz", x_train=grey, y_train=np.arange(4))
    ds = data.load(f"npz:{tmp_path / 'g.npz'}")
    np.testing.assert_array_equal(ds.images, np.repeat(grey, 3, axis=-1))


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"y_test": None}, "missing array.*y_test"),
        ({"x_train": np.zeros((12, 16, 16), np.uint8)}, r"must be uint8 \[N, H, W, 1 or 3\]"),
        ({"x_train": np.zeros((12, 16, 16, 3), np.float32)}, "must be uint8, got float32"),
        ({"x_train": np.zeros((12, 16, 16, 2), np.uint8)}, r"\[N, H, W, 1 or 3\]"),
        ({"y_train": np.arange(11)}, r"labels must have shape \[12\]"),
        ({"y_train": -np.ones(12, int)}, r"labels must lie in \[0, 4\)"),
    ],
)
def test_npz_bad_input(tmp_path, overrides, message):
    _save_npz(tmp_path / "bad.npz", **overrides)
    with pytest.raises(InputError, match=message):
        data.load(f"npz:{tmp_path / 'bad.npz'}", "train")


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: data.load("imagenet"), "unknown dataset 'imagenet'; choose from shapes10"),
        (lambda: data.load("shapes10", "valid"), "unknown split 'valid'"),
        (lambda: data.load("shapes10", num_examples=0), "num_examples must be positive"),
        (lambda: data.load("shapes10", colour=True), r"unknown option\(s\) colour"),
        (lambda: data.load("npz:/no/such/file.npz"), "not found"),
        (
            lambda: data.Dataset(
                np.zeros((2, 4, 4, 3), np.uint8), np.array([0, 5], np.int32), 3, "x"
            ),
            r"labels must lie in \[0, 3\)",
        ),
        (
            lambda: data.Dataset(np.zeros((2, 4, 4, 3), np.uint8), np.zeros(2, np.int64), 3, "x"),
            "labels must be int32",
        ),
    ],
)
def test_bad_input_is_one_clear_error(call, message):
    with pytest.raises(InputError, match=message):
        call()


def test_shapes10_bytes_are_pinned():
    """The same seed gives the same bytes on every machine and version of the generator
    (bump SHAPES10_VERSION and this digest together when the generator changes)."""
    import hashlib

    images, labels = shapes.generate(20, 0)
    digest = hashlib.sha256(images.tobytes() + labels.tobytes()).hexdigest()
    assert digest == "3c760e27e89883b4cd22badfa95e247502daeb3a35603809f1083fcab33b9ac1"


def test_a_cache_that_cannot_be_written_keeps_the_arrays_in_memory(tmp_path, caplog):
    """A full disk or a read-only cache folder costs the cache, not the run."""
    from mmc_jax.data import cache

    blocked = tmp_path / "a_file"
    blocked.write_text("not a folder")
    built = {"x": np.arange(6).reshape(2, 3), "y": np.ones(2)}
    with caplog.at_level("WARNING"):
        arrays = cache.cached_arrays("entry", lambda: built, directory=str(blocked / "cache"))
    assert sorted(arrays) == ["x", "y"]
    np.testing.assert_array_equal(arrays["x"], built["x"])
    assert "cannot be written" in caplog.text and not (blocked.parent / "cache").exists()
