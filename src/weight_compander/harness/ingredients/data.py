"""Offline, in-memory data sets: real data as tensors, one fixed validation split for every run.

Every loader returns the same :class:`Dataset`. Inputs are float32, normalised with the
per-channel mean and std of the training examples actually used (after the validation split
and ``train_subset``), so nothing about the validation or test data leaks into training.
Images are ``(N, C, H, W)``, 1-D signals ``(N, C, L)``; labels are int64.

The validation split is carved from the official training data with a permutation drawn from a
*constant* seed, independent of the run's seed: every seed and every variant of a comparison is
validated on exactly the same examples. The test set is the data set's own.

Nothing is downloaded. Files come from the Debian package ``dataset-fashion-mnist``, from a
folder the user passes (``--data-dir``), or from Python packages (scikit-learn, mnist1d).
"""

from __future__ import annotations

import functools
import gzip
import importlib
import math
import os
import pickle
import random
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from weight_compander.harness.errors import DataError

__all__ = [
    "DATASETS",
    "DEFAULT_VAL_SIZE",
    "FASHION_MNIST_DIR",
    "DataSpec",
    "Dataset",
    "load_dataset",
    "read_cifar_batch",
    "read_idx",
]

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian: dataset-fashion-mnist
DEFAULT_VAL_SIZE = 0.1  # a fraction of the official training set, or an int count
SPLIT_SEED = 1234567  # constant on purpose: the split must not depend on the run's seed
DIGITS_TEST_FRACTION = 0.2  # scikit-learn digits has no official test set


@dataclass(frozen=True)
class DataSpec:
    """What a run needs to know of a data set beyond its files."""

    augment_policy: str  # the augmentation that makes sense for it (augment.py)
    val_size: int  # validation images a run carves from the training set by default
    pixel_max: float | None = 255.0  # the largest raw pixel value (8-bit images); None: signals


# The data sets, by name: the one list every help text and check derives from. No flips for
# digits, whose mirror images are other digits or none; a tenth of the training set at most
# for validation, so the small sets keep enough to train on.
DATASETS: dict[str, DataSpec] = {
    "fashion-mnist": DataSpec("crop-flip", 5000),
    "mnist": DataSpec("crop", 5000),
    "mnist1d": DataSpec("shift1d", 500, pixel_max=None),
    "digits": DataSpec("crop", 300, pixel_max=16.0),
    "cifar10": DataSpec("crop-flip", 5000),
    "cifar100": DataSpec("crop-flip", 5000),
}

_IDX_STEMS = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}
_IDX_DTYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_IDX_LIST = ", ".join(_IDX_STEMS.values())

_HOW_TO = {
    "fashion-mnist": (
        "Install Fashion-MNIST with `sudo apt-get install dataset-fashion-mnist` (it puts the "
        f"files in {FASHION_MNIST_DIR}), or pass --data-dir DIR (data_dir= in Python) with the "
        f"four IDX files {_IDX_LIST}, gzipped (.gz) or raw, "
        "e.g. from https://github.com/zalandoresearch/fashion-mnist."
    ),
    "mnist": (
        "Pass --data-dir DIR (data_dir= in Python) with the four MNIST IDX files "
        f"{_IDX_LIST}, gzipped (.gz) or raw, e.g. from "
        "https://ossci-datasets.s3.amazonaws.com/mnist/ (the mirror torchvision uses)."
    ),
    "cifar10": (
        "Download https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz, extract it "
        "(tar xzf cifar-10-python.tar.gz) and pass --data-dir pointing to the extracted "
        "cifar-10-batches-py folder or its parent; it must hold data_batch_1 ... data_batch_5 "
        "and test_batch."
    ),
    "cifar100": (
        "Download https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz, extract it "
        "(tar xzf cifar-100-python.tar.gz) and pass --data-dir pointing to the extracted "
        "cifar-100-python folder or its parent; it must hold the files train and test."
    ),
}




@dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """A data set in memory, split into train / validation / test tensors.

    ``input_size`` is the spatial shape of one example, ``(H, W)`` for images and ``(L,)`` for
    1-D signals (what :func:`~weight_compander.harness.models.build_model` takes);
    ``augment_policy`` names the policy of :func:`~weight_compander.harness.augment.augment_batch`
    that suits the data; ``source`` says where the data came from; ``mean`` and ``std`` are the
    per-channel training statistics used to normalise every split. ``train_y_clean`` holds the
    training labels as they were before label noise (label_noise.py), so a run can tell which
    examples it was given a wrong label for; None without label noise.
    """

    name: str
    train_x: Tensor
    train_y: Tensor
    val_x: Tensor
    val_y: Tensor
    test_x: Tensor
    test_y: Tensor
    num_classes: int
    in_channels: int
    input_size: tuple[int, ...]
    augment_policy: str
    source: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    train_y_clean: Tensor | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one example: ``(C, H, W)`` for images, ``(C, L)`` for 1-D signals."""
        return tuple(self.train_x.shape[1:])

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}, train={len(self.train_y)}, val={len(self.val_y)}, "
            f"test={len(self.test_y)}, input_shape={self.input_shape}, "
            f"num_classes={self.num_classes}, augment_policy={self.augment_policy!r}, "
            f"source={self.source!r})"
        )


def load_dataset(
    name: str,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    val_size: int | float = DEFAULT_VAL_SIZE,
    train_subset: int | None = None,
) -> Dataset:
    """Load a data set into memory, with a seed-independent validation split.

    Args:
        name: one of :data:`DATASETS`.
        data_dir: folder with the files (IDX for ``fashion-mnist``/``mnist``, the python
            pickles for ``cifar10``/``cifar100``), or its parent holding a folder named after
            the data set (``fashion-mnist``, ``cifar-10-batches-py``, ...). ``fashion-mnist``
            defaults to :data:`FASHION_MNIST_DIR`; ``digits`` and ``mnist1d`` ignore it.
        val_size: validation examples carved from the official training set: an ``int``
            count or a ``float`` fraction in ``[0, 1)``. The split comes from a fixed
            permutation, so it is the same for every seed, variant and ``train_subset``.
        train_subset: keep only the first ``train_subset`` of the training examples left
            after carving the validation split (in the fixed permuted order, so a smaller
            subset is contained in a larger one and classes stay mixed). ``None`` keeps all.

    Returns:
        A :class:`Dataset`.

    Raises:
        ValueError: unknown name or invalid sizes.
        DataError: a file is missing or corrupt (the message says how to get the data).
    """
    key = str(name).strip().lower().replace("_", "-")
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")
    if key in ("fashion-mnist", "mnist"):
        raw = _load_idx_dataset(key, data_dir)
    elif key == "mnist1d":
        raw = _load_mnist1d()
    elif key == "digits":
        raw = _load_digits()
    else:
        raw = _load_cifar(key, data_dir)
    train_x, train_y, test_x, test_y, num_classes, source = raw
    return _split_and_normalise(
        key, train_x, train_y, test_x, test_y, num_classes, source, val_size, train_subset
    )


# --------------------------------------------------------------------------- splitting


def _resolve_val_size(val_size: int | float, n: int) -> int:
    if isinstance(val_size, bool) or not isinstance(val_size, int | float):
        raise ValueError(f"val_size must be an int count or a float fraction, got {val_size!r}")
    if isinstance(val_size, float):
        if not 0.0 <= val_size < 1.0:
            raise ValueError(f"val_size as a fraction must be in [0, 1), got {val_size}")
        val_size = round(val_size * n)
    if not 0 <= val_size < n:
        raise ValueError(f"val_size must be a count in [0, {n}) for this data set, got {val_size}")
    return val_size


def _split_and_normalise(
    name: str,
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    num_classes: int,
    source: str,
    val_size: int | float,
    train_subset: int | None,
) -> Dataset:
    n = len(train_y)
    n_val = _resolve_val_size(val_size, n)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(SPLIT_SEED))
    val_idx, train_idx = perm[:n_val], perm[n_val:]
    if train_subset is not None:
        if isinstance(train_subset, bool) or not isinstance(train_subset, int):
            raise ValueError(f"train_subset must be an int or None, got {train_subset!r}")
        if not 1 <= train_subset <= len(train_idx):
            raise ValueError(
                f"train_subset must be between 1 and {len(train_idx)} (the {name} training "
                f"examples left after the validation split of {n_val}), got {train_subset}"
            )
        train_idx = train_idx[:train_subset]
    # Index the raw (often uint8) data first, convert afterwards: half the memory traffic.
    tr_x, va_x = train_x[train_idx].float(), train_x[val_idx].float()
    te_x = test_x.to(torch.float32, copy=True)  # normalised in place below: never the caller's
    reduce_dims = [0, *range(2, tr_x.dim())]
    var, mean = torch.var_mean(tr_x, dim=reduce_dims, correction=0)
    std = var.sqrt()
    std = torch.where(std > 0, std, torch.ones_like(std))  # constant data: leave the scale
    shape = (1, -1) + (1,) * (tr_x.dim() - 2)
    for x in (tr_x, va_x, te_x):
        x.sub_(mean.view(shape)).div_(std.view(shape))
    return Dataset(
        name=name,
        train_x=tr_x,
        train_y=train_y[train_idx].long(),
        val_x=va_x,
        val_y=train_y[val_idx].long(),
        test_x=te_x,
        test_y=test_y.long(),
        num_classes=num_classes,
        in_channels=tr_x.shape[1],
        input_size=tuple(tr_x.shape[2:]),
        augment_policy=DATASETS[name].augment_policy,
        source=source,
        mean=tuple(mean.tolist()),
        std=tuple(std.tolist()),
    )


def _check_labels(y: np.ndarray, num_classes: int, path: Path | str, how_to: str) -> None:
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise DataError(
            f"{path}: labels must lie in [0, {num_classes}), found {y.min()}..{y.max()}; "
            f"the file is corrupt or of another data set. {how_to}"
        )


# --------------------------------------------------------------------------- IDX (MNIST family)


def read_idx(path: str | os.PathLike[str], *, how_to: str = "") -> np.ndarray:
    """Read one IDX file (gzipped or raw), checking its magic number and size.

    Args:
        path: the file; gzip is detected from its first bytes, not its name.
        how_to: appended to error messages (how to get a good copy of the data).

    Returns:
        A read-only numpy array with the shape and dtype the header declares.

    Raises:
        DataError: the file is missing, not gzip/IDX, or shorter/longer than its header says.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}. {how_to}") from e
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{path} is a corrupt or truncated gzip file ({e}). {how_to}") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES or raw[3] == 0:
        raise DataError(
            f"{path} is not an IDX file (magic number 0x{raw[:4].hex() or 'empty'}; expected "
            f"00 00 <type> <ndim>). {how_to}"
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} is truncated: the IDX header is incomplete. {how_to}")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = header + math.prod(shape) * dtype.itemsize
    if len(raw) != expected:
        state = "truncated" if len(raw) < expected else "longer than its header says"
        raise DataError(
            f"{path} is {state}: {len(raw)} bytes, but an IDX file of shape {shape} has {expected}. {how_to}"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def _find_idx(folder: Path, stem: str) -> Path | None:
    alt = stem.replace("-idx", ".idx")  # e.g. train-images.idx3-ubyte, another common spelling
    for candidate in (stem, stem + ".gz", alt, alt + ".gz"):
        if (folder / candidate).is_file():
            return folder / candidate
    return None


def _candidate_dirs(data_dir: str | os.PathLike[str], subdirs: tuple[str, ...]) -> list[Path]:
    base = Path(data_dir).expanduser()
    return [base, *(base / s for s in subdirs)]


def _load_idx_dataset(name: str, data_dir: str | os.PathLike[str] | None) -> tuple:
    how_to = _HOW_TO[name]
    if data_dir is None:
        if name == "mnist":
            raise DataError(f"the mnist data set needs a folder with its IDX files. {how_to}")
        folders = [FASHION_MNIST_DIR]
    else:
        folders = _candidate_dirs(data_dir, (name, name.replace("-", "_")))
    folder = next((f for f in folders if _find_idx(f, _IDX_STEMS["train_x"])), folders[0])
    if not folder.is_dir():
        raise DataError(f"{name}: folder {folder} does not exist. {how_to}")
    arrays = {}
    for key, stem in _IDX_STEMS.items():
        path = _find_idx(folder, stem)
        if path is None:
            raise DataError(f"{name}: {stem} (or {stem}.gz) is missing in {folder}. {how_to}")
        arr = read_idx(path, how_to=how_to)
        want = 3 if key.endswith("_x") else 1
        if arr.ndim != want or arr.dtype != np.uint8:
            raise DataError(f"{path}: expected {want}-D uint8 data, got {arr.ndim}-D {arr.dtype}. {how_to}")
        if key.endswith("_y"):
            _check_labels(arr, 10, path, how_to)
        arrays[key] = (path, arr)
    for split in ("train", "test"):
        (px, x), (py, y) = arrays[f"{split}_x"], arrays[f"{split}_y"]
        if x.shape[1:] != arrays["train_x"][1].shape[1:] or x.shape[1] != x.shape[2]:
            raise DataError(
                f"{px}: expected square images of the training images' size, got {x.shape[1:]}. {how_to}"
            )
        if len(x) != len(y):
            raise DataError(
                f"{px.name} holds {len(x)} images of {x.shape[1:]} but {py.name} holds "
                f"{len(y)} labels; the files do not belong together. {how_to}"
            )

    # torch.tensor copies, so the read-only frombuffer arrays never reach torch.
    def t(key: str) -> Tensor:
        return torch.tensor(arrays[key][1])

    label = "Fashion-MNIST" if name == "fashion-mnist" else "MNIST"
    return (
        t("train_x").unsqueeze(1),
        t("train_y"),
        t("test_x").unsqueeze(1),
        t("test_y"),
        10,
        f"{label} IDX files in {folder}",
    )


# --------------------------------------------------------------------------- CIFAR pickles


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickle only what the CIFAR files hold: dicts, lists, bytes and numpy arrays.

    Why: pickle runs arbitrary code from a file; the user's data folder should not be able to.
    """

    _ALLOWED = frozenset(
        {
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy.core.multiarray", "scalar"),
            ("numpy.core.numeric", "_frombuffer"),
            ("_codecs", "encode"),  # bytes in protocol-2 pickles written by Python 3
        }
    )

    def find_class(self, module: str, name: str) -> object:
        canonical = module.replace("numpy._core", "numpy.core")
        if (canonical, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")
        # numpy 2 renamed numpy.core to numpy._core; old pickles name the old module.
        for mod in (canonical.replace("numpy.core", "numpy._core"), canonical):
            try:
                return getattr(importlib.import_module(mod), name)
            except (ImportError, AttributeError):
                continue
        raise pickle.UnpicklingError(f"cannot find {module}.{name} in this numpy")


def read_cifar_batch(
    path: str | os.PathLike[str],
    *,
    label_key: str = "labels",
    num_classes: int = 10,
    how_to: str = "",
) -> tuple[np.ndarray, np.ndarray]:
    """Read one file of the CIFAR python-pickle layout.

    The file is a pickled dict with ``b"data"`` (N x 3072 uint8, channel-major rows) and the
    labels under ``label_key`` (``labels`` for CIFAR-10, ``fine_labels`` for CIFAR-100).
    Only dicts, lists, bytes and numpy arrays are unpickled, nothing executable.

    Returns:
        ``(images, labels)``: uint8 ``(N, 3, 32, 32)`` and int64 ``(N,)``.

    Raises:
        DataError: missing file, not a pickle of that layout, or inconsistent sizes.
    """
    path = Path(path)
    try:
        with path.open("rb") as f:
            obj = _ArrayUnpickler(f, encoding="bytes").load()
    except FileNotFoundError as e:
        raise DataError(f"{path} is missing. {how_to}") from e
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}. {how_to}") from e
    except Exception as e:  # pickle raises many types on garbage input
        raise DataError(
            f"{path} is not a readable CIFAR python pickle ({type(e).__name__}: {e}). {how_to}"
        ) from e
    if not isinstance(obj, dict):
        raise DataError(f"{path} holds a {type(obj).__name__}, not a CIFAR batch dict. {how_to}")
    d = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}
    if "data" not in d or label_key not in d:
        raise DataError(
            f"{path} lacks the keys 'data' and '{label_key}' (found {sorted(map(str, d))}). {how_to}"
        )
    x, y = np.asarray(d["data"]), np.asarray(d[label_key])
    if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3 * 32 * 32 or y.shape != (len(x),):
        raise DataError(
            f"{path}: expected data of shape (N, 3072) uint8 and N labels, got data "
            f"{x.shape} {x.dtype} and labels {y.shape}. {how_to}"
        )
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{path}: labels must be integers, got {y.dtype}. {how_to}")
    _check_labels(y, num_classes, path, how_to)
    return x.reshape(-1, 3, 32, 32), y.astype(np.int64)


def _load_cifar(name: str, data_dir: str | os.PathLike[str] | None) -> tuple:
    how_to = _HOW_TO[name]
    if name == "cifar10":
        subdir, train_files, test_file = (
            "cifar-10-batches-py",
            [f"data_batch_{i}" for i in range(1, 6)],
            "test_batch",
        )
        label_key, num_classes, label = "labels", 10, "CIFAR-10"
    else:
        subdir, train_files, test_file = "cifar-100-python", ["train"], "test"
        label_key, num_classes, label = "fine_labels", 100, "CIFAR-100"
    if data_dir is None:
        raise DataError(f"{name} needs a data folder. {how_to}")
    folders = _candidate_dirs(data_dir, (subdir,))
    folder = next((f for f in folders if (f / test_file).is_file()), folders[0])
    if not folder.is_dir():
        raise DataError(f"{name}: folder {folder} does not exist. {how_to}")
    parts = [
        read_cifar_batch(folder / f, label_key=label_key, num_classes=num_classes, how_to=how_to)
        for f in [*train_files, test_file]
    ]
    train_x = np.concatenate([p[0] for p in parts[:-1]])
    train_y = np.concatenate([p[1] for p in parts[:-1]])
    test_x, test_y = parts[-1]
    return (
        torch.from_numpy(train_x),
        torch.from_numpy(train_y),
        torch.from_numpy(np.ascontiguousarray(test_x)),
        torch.from_numpy(test_y),
        num_classes,
        f"{label} python pickles in {folder}",
    )


# --------------------------------------------------------------------------- generated / bundled


@functools.cache
def _mnist1d_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as e:
        raise DataError(
            "mnist1d needs the mnist1d package: pip install mnist1d "
            "(or pip install 'weight-compander[harness]')"
        ) from e
    # make_dataset reseeds the global numpy/random generators; keep the caller's state.
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        d = make_dataset(get_dataset_args())  # generated offline; get_dataset would download
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    return d["x"], d["y"], d["x_test"], d["y_test"]


def _load_mnist1d() -> tuple:
    x, y, x_test, y_test = _mnist1d_arrays()
    return (
        torch.tensor(x, dtype=torch.float32).unsqueeze(1),
        torch.tensor(y, dtype=torch.int64),
        torch.tensor(x_test, dtype=torch.float32).unsqueeze(1),
        torch.tensor(y_test, dtype=torch.int64),
        10,
        "MNIST-1D generated offline by mnist1d make_dataset(get_dataset_args()), standard 4000/1000 split",
    )


def _load_digits() -> tuple:
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise DataError(
            "digits needs scikit-learn: pip install scikit-learn (or pip install 'weight-compander[harness]')"
        ) from e
    bunch = load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1)  # (1797, 1, 8, 8), 0..16
    y = torch.tensor(bunch.target, dtype=torch.int64)
    # No official test set: a fixed permutation (another constant than the validation split's)
    # sets aside the last 20% for good.
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(SPLIT_SEED + 1))
    n_test = round(DIGITS_TEST_FRACTION * len(y))
    train, test = perm[:-n_test], perm[-n_test:]
    return (
        x[train],
        y[train],
        x[test],
        y[test],
        10,
        f"scikit-learn load_digits (bundled), fixed {len(train)}/{n_test} train/test split",
    )
