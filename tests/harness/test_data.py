"""Data loading: IDX and CIFAR readers on small files written here, splits, errors."""

from __future__ import annotations

import gzip
import os
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from weight_compander.harness.errors import DataError
from weight_compander.harness.ingredients.data import (
    DATASETS,
    FASHION_MNIST_DIR,
    load_dataset,
    read_cifar_batch,
    read_idx,
)

STEMS = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}


def idx_bytes(arr: np.ndarray, type_code: int = 0x08) -> bytes:
    header = bytes([0, 0, type_code, arr.ndim]) + np.array(arr.shape, dtype=">u4").tobytes()
    return header + arr.tobytes()


def write_idx(path: Path, arr: np.ndarray, gz: bool = False) -> Path:
    data = idx_bytes(arr)
    if gz:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def make_images(n: int, offset: int = 0) -> np.ndarray:
    """Unique 28x28 images: pixels (0,0)/(0,1) encode the index, the rest is noise."""
    rng = np.random.default_rng(offset)
    x = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    ids = np.arange(offset, offset + n)
    x[:, 0, 0], x[:, 0, 1] = ids % 256, ids // 256
    return x


def write_mnist_folder(folder: Path, n_train: int = 60, n_test: int = 20, gz=(True, False)):
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train_x": make_images(n_train),
        "train_y": (np.arange(n_train) % 10).astype(np.uint8),
        "test_x": make_images(n_test, offset=1000),
        "test_y": (np.arange(n_test) % 10).astype(np.uint8),
    }
    for i, (key, arr) in enumerate(arrays.items()):
        write_idx(folder / STEMS[key], arr, gz=gz[i % len(gz)])
    return arrays


def image_ids(x: torch.Tensor, ds) -> np.ndarray:
    """Undo the normalisation and read back the index encoded in each image."""
    raw = (x[:, 0, 0, :2] * ds.std[0] + ds.mean[0]).round().long().numpy()
    return raw[:, 0] + 256 * raw[:, 1]


# --------------------------------------------------------------------------- IDX reader


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_round_trip(tmp_path, gz):
    arr = make_images(5)
    path = write_idx(tmp_path / "images-idx3-ubyte", arr, gz=gz)
    out = read_idx(path)
    assert out.dtype == np.uint8 and out.shape == (5, 28, 28)
    np.testing.assert_array_equal(out, arr)


def test_read_idx_big_endian_int32(tmp_path):
    arr = np.array([[1, -2, 70000]], dtype=">i4")
    path = tmp_path / "ints"
    path.write_bytes(idx_bytes(arr, type_code=0x0C))
    np.testing.assert_array_equal(read_idx(path), [[1, -2, 70000]])


def test_read_idx_bad_magic(tmp_path):
    path = tmp_path / "bad"
    path.write_bytes(b"\x08\x03\x00\x00" + bytes(100))
    with pytest.raises(DataError, match=r"not an IDX file.*HOWTO"):
        read_idx(path, how_to="HOWTO")


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_truncated(tmp_path, gz):
    data = idx_bytes(make_images(3))
    path = tmp_path / "trunc"
    if gz:
        path.write_bytes(gzip.compress(data)[:-20])  # cut the gzip stream
        match = r"corrupt or truncated gzip"
    else:
        path.write_bytes(data[:-10])
        match = r"truncated: 2358 bytes.*shape \(3, 28, 28\) has 2368"  # 16 header + 2352
    with pytest.raises(DataError, match=match):
        read_idx(path)


def test_read_idx_missing(tmp_path):
    with pytest.raises(DataError, match=r"cannot read .*nope.*get it here"):
        read_idx(tmp_path / "nope", how_to="get it here")


# --------------------------------------------------------------------------- IDX data sets


def test_mnist_from_folder_gz_and_raw(tmp_path):
    arrays = write_mnist_folder(tmp_path, gz=(True, False))
    ds = load_dataset("mnist", data_dir=tmp_path, val_size=10)
    assert (len(ds.train_y), len(ds.val_y), len(ds.test_y)) == (50, 10, 20)
    assert ds.train_x.shape == (50, 1, 28, 28) and ds.train_x.dtype == torch.float32
    assert ds.train_y.dtype == torch.int64
    assert (ds.in_channels, ds.input_size, ds.num_classes) == (1, (28, 28), 10)
    assert ds.input_shape == (1, 28, 28)
    assert ds.augment_policy == "crop" and str(tmp_path) in ds.source
    # Normalised with the training examples' own statistics.
    assert abs(ds.train_x.mean().item()) < 1e-5
    assert abs(ds.train_x.std(correction=0).item() - 1) < 1e-4
    # Every example keeps its label: ids decode back to the written arrays.
    train_ids = image_ids(ds.train_x, ds)
    np.testing.assert_array_equal(ds.train_y.numpy(), arrays["train_y"][train_ids])
    np.testing.assert_array_equal(image_ids(ds.test_x, ds), np.arange(1000, 1020))


def test_idx_data_in_named_subfolder(tmp_path):
    write_mnist_folder(tmp_path / "fashion-mnist")
    ds = load_dataset("fashion-mnist", data_dir=tmp_path, val_size=0)
    assert len(ds.train_y) == 60 and len(ds.val_y) == 0
    assert ds.augment_policy == "crop-flip"


def test_missing_idx_file_says_how_to_get_data(tmp_path):
    write_mnist_folder(tmp_path)
    (tmp_path / (STEMS["test_y"])).unlink(missing_ok=True)
    (tmp_path / (STEMS["test_y"] + ".gz")).unlink(missing_ok=True)
    with pytest.raises(
        DataError,
        match=r"t10k-labels-idx1-ubyte.*missing.*apt-get install "
        r"dataset-fashion-mnist.*--data-dir",
    ):
        load_dataset("fashion-mnist", data_dir=tmp_path)
    with pytest.raises(DataError, match=r"t10k-labels.*--data-dir"):
        load_dataset("mnist", data_dir=tmp_path)


def test_missing_folder_and_mnist_without_folder(tmp_path):
    with pytest.raises(DataError, match=r"does not exist.*apt-get install"):
        load_dataset("fashion-mnist", data_dir=tmp_path / "absent")
    with pytest.raises(DataError, match=r"--data-dir"):
        load_dataset("mnist")


def test_corrupt_idx_file_in_data_set(tmp_path):
    write_mnist_folder(tmp_path, gz=(False,))
    path = tmp_path / STEMS["train_x"]
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte is truncated.*apt-get"):
        load_dataset("fashion-mnist", data_dir=tmp_path)


def test_idx_labels_out_of_range_or_mismatched(tmp_path):
    write_mnist_folder(tmp_path, gz=(False,))
    write_idx(tmp_path / STEMS["test_y"], np.full(20, 11, dtype=np.uint8))
    with pytest.raises(DataError, match=r"labels must lie in \[0, 10\)"):
        load_dataset("mnist", data_dir=tmp_path)
    write_idx(tmp_path / STEMS["test_y"], np.zeros(19, dtype=np.uint8))
    with pytest.raises(DataError, match=r"do not belong together"):
        load_dataset("mnist", data_dir=tmp_path)


# --------------------------------------------------------------------------- splits


def test_validation_split_is_seed_independent_and_disjoint(tmp_path):
    write_mnist_folder(tmp_path, n_train=100)
    torch.manual_seed(1)
    a = load_dataset("mnist", data_dir=tmp_path, val_size=0.2)
    torch.manual_seed(2)
    b = load_dataset("mnist", data_dir=tmp_path, val_size=0.2)
    assert torch.equal(a.val_x, b.val_x) and torch.equal(a.train_x, b.train_x)
    train, val = set(image_ids(a.train_x, a)), set(image_ids(a.val_x, a))
    assert len(val) == 20 and len(train) == 80
    assert not train & val and train | val == set(range(100))
    # Not just the first / last examples of the file: the split is a permutation.
    assert val != set(range(20)) and val != set(range(80, 100))


def test_train_subset_takes_first_n_after_validation(tmp_path):
    write_mnist_folder(tmp_path, n_train=100)
    full = load_dataset("mnist", data_dir=tmp_path, val_size=10)
    small = load_dataset("mnist", data_dir=tmp_path, val_size=10, train_subset=30)
    smaller = load_dataset("mnist", data_dir=tmp_path, val_size=10, train_subset=12)
    ids_full, ids_small = image_ids(full.train_x, full), image_ids(small.train_x, small)
    np.testing.assert_array_equal(ids_small, ids_full[:30])
    np.testing.assert_array_equal(image_ids(smaller.train_x, smaller), ids_full[:12])
    np.testing.assert_array_equal(image_ids(small.val_x, small), image_ids(full.val_x, full))
    # The statistics come from the 30 examples actually trained on.
    assert abs(small.train_x.mean().item()) < 1e-5 and small.mean != full.mean


def test_size_arguments_are_checked(tmp_path):
    write_mnist_folder(tmp_path, n_train=100)
    with pytest.raises(ValueError, match="val_size"):
        load_dataset("mnist", data_dir=tmp_path, val_size=1.5)
    with pytest.raises(ValueError, match="val_size"):
        load_dataset("mnist", data_dir=tmp_path, val_size=100)
    with pytest.raises(ValueError, match=r"train_subset must be between 1 and 90"):
        load_dataset("mnist", data_dir=tmp_path, val_size=10, train_subset=91)


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown dataset 'imagenet'.*fashion-mnist.*cifar100"):
        load_dataset("imagenet")
    assert "digits" in DATASETS and "mnist1d" in DATASETS


# --------------------------------------------------------------------------- CIFAR


def cifar_batch(n: int, seed: int, label_key: bytes, num_classes: int) -> dict:
    rng = np.random.default_rng(seed)
    return {
        b"batch_label": b"testing batch",
        label_key: [int(v) for v in rng.integers(0, num_classes, n)],
        b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
        b"filenames": [b"img%d.png" % i for i in range(n)],
    }


def write_pickle(path: Path, obj: object, protocol: int = 2) -> None:
    with path.open("wb") as f:
        pickle.dump(obj, f, protocol=protocol)


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_read_cifar_batch_layout(tmp_path, protocol):
    batch = cifar_batch(4, 0, b"labels", 10)
    write_pickle(tmp_path / "data_batch_1", batch, protocol)
    x, y = read_cifar_batch(tmp_path / "data_batch_1")
    assert x.shape == (4, 3, 32, 32) and x.dtype == np.uint8 and y.dtype == np.int64
    # Rows are channel-major: 1024 red, then green, then blue values, each row-major.
    assert x[2, 1, 3, 5] == batch[b"data"][2, 1024 + 3 * 32 + 5]
    assert list(y) == batch[b"labels"]


def test_cifar10_folder(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for i in range(1, 6):
        write_pickle(folder / f"data_batch_{i}", cifar_batch(4, i, b"labels", 10))
    write_pickle(folder / "test_batch", cifar_batch(6, 9, b"labels", 10))
    ds = load_dataset("cifar10", data_dir=tmp_path, val_size=5)  # the parent folder works
    assert (len(ds.train_y), len(ds.val_y), len(ds.test_y)) == (15, 5, 6)
    assert ds.train_x.shape[1:] == (3, 32, 32) and ds.in_channels == 3
    assert ds.num_classes == 10 and ds.augment_policy == "crop-flip"
    assert len(ds.mean) == 3
    per_channel = ds.train_x.transpose(0, 1).reshape(3, -1)
    assert per_channel.mean(1).abs().max() < 1e-5


def test_cifar100_folder(tmp_path):
    write_pickle(tmp_path / "train", cifar_batch(12, 1, b"fine_labels", 100))
    write_pickle(tmp_path / "test", cifar_batch(5, 2, b"fine_labels", 100))
    ds = load_dataset("cifar100", data_dir=tmp_path, val_size=2)
    assert (len(ds.train_y), len(ds.test_y), ds.num_classes) == (10, 5, 100)


def test_cifar_missing_and_corrupt_files(tmp_path):
    write_pickle(tmp_path / "data_batch_1", cifar_batch(4, 1, b"labels", 10))
    with pytest.raises(DataError, match=r"data_batch_2 is missing.*cifar-10-python\.tar\.gz"):
        load_dataset("cifar10", data_dir=tmp_path)
    (tmp_path / "test_batch").write_bytes(b"\x80\x02}q\x00(garbage")
    with pytest.raises(DataError, match=r"test_batch is not a readable CIFAR python pickle"):
        read_cifar_batch(tmp_path / "test_batch")
    write_pickle(tmp_path / "wrong", {b"data": np.zeros((2, 10), np.uint8), b"labels": [0, 1]})
    with pytest.raises(DataError, match=r"\(N, 3072\)"):
        read_cifar_batch(tmp_path / "wrong")
    with pytest.raises(DataError, match=r"cifar-100-python\.tar\.gz"):
        load_dataset("cifar100")


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_cifar_reader_refuses_code(tmp_path):
    write_pickle(tmp_path / "evil", {b"data": _Evil(), b"labels": []})
    with pytest.raises(DataError, match=r"refusing to load .*system"):
        read_cifar_batch(tmp_path / "evil")


# --------------------------------------------------------------------------- bundled / generated


def test_digits():
    ds = load_dataset("digits")
    assert ds.train_x.shape[1:] == (1, 8, 8) and ds.input_size == (8, 8)
    assert len(ds.train_y) + len(ds.val_y) + len(ds.test_y) == 1797
    assert len(ds.test_y) == 359
    assert set(ds.test_y.tolist()) == set(range(10)) and ds.augment_policy == "crop"
    again = load_dataset("digits")
    assert torch.equal(ds.test_x, again.test_x)


def test_mnist1d_offline_and_keeps_global_rng():
    np.random.seed(7)
    random.seed(7)
    expected_np, expected_py = np.random.rand(), random.random()
    np.random.seed(7)
    random.seed(7)
    ds = load_dataset("mnist1d", val_size=400)
    assert (np.random.rand(), random.random()) == (expected_np, expected_py)
    assert ds.train_x.shape == (3600, 1, 40) and ds.input_size == (40,)
    assert (len(ds.val_y), len(ds.test_y), ds.num_classes) == (400, 1000, 10)
    assert ds.augment_policy == "shift1d" and "4000/1000" in ds.source


@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="dataset-fashion-mnist not installed")
def test_fashion_mnist_from_debian_package():
    ds = load_dataset("fashion-mnist", val_size=5000)
    assert (len(ds.train_y), len(ds.val_y), len(ds.test_y)) == (55000, 5000, 10000)
    assert ds.train_x.shape[1:] == (1, 28, 28)
    assert torch.bincount(ds.test_y).tolist() == [1000] * 10
    assert abs(ds.train_x.mean().item()) < 1e-3 and abs(ds.train_x.std().item() - 1) < 1e-3
    assert str(FASHION_MNIST_DIR) in ds.source
