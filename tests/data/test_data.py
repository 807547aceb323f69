"""Dataset loaders: tiny files of every format made in ``tmp_path``, loaded via load_dataset."""

from __future__ import annotations

import gzip
import io
import json
import os
import pickle
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from exdistill.data import DATASETS, describe_datasets, load_dataset
from exdistill.data.idx import FASHION_CLASSES
from exdistill.errors import ConfigError, DataError

SHARED_DATA = Path(__file__).parents[2].parent / "shared" / "data"
N_TRAIN, N_TEST, N_CLASSES = 40, 20, 4  # 10 train images per class


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Never write to the user's real cache: the default cache root lives in tmp_path."""
    monkeypatch.setenv("EXDISTILL_CACHE", str(tmp_path / "default-cache"))


@dataclass
class Expected:
    data_dir: Path | None
    n_train: int  # train + val
    n_test: int
    shape: tuple[int, int, int]  # (C, H, W)
    class_names: list[str]


def unique_images(n: int, shape: tuple[int, ...], seed: int) -> np.ndarray:
    """uint8 images, image ``i`` has first pixel ``i`` so no two are equal."""
    x = np.random.default_rng(seed).integers(0, 256, size=(n, *shape), dtype=np.uint8)
    x.reshape(n, -1)[:, 0] = np.arange(n)
    return x


def cyclic_labels(n: int, classes: int = N_CLASSES) -> np.ndarray:
    return np.arange(n) % classes


# ---- writers for each format -------------------------------------------------------------------


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx(folder: Path, gz: bool, n_train=N_TRAIN, n_test=N_TEST, train_labels=None) -> Path:
    """MNIST-style files, 7×6 images."""
    folder.mkdir(parents=True, exist_ok=True)
    y_train = cyclic_labels(n_train, 10) if train_labels is None else train_labels
    files = {
        "train-images-idx3-ubyte": unique_images(n_train, (7, 6), 0),
        "train-labels-idx1-ubyte": np.asarray(y_train),
        "t10k-images-idx3-ubyte": unique_images(n_test, (7, 6), 1),
        "t10k-labels-idx1-ubyte": cyclic_labels(n_test, 10),
    }
    for name, array in files.items():
        data = idx_bytes(array)
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)
    return folder


def cifar_batch(n: int, seed: int, label_key, bytes_keys: bool) -> dict:
    data = unique_images(n, (3072,), seed)
    batch = {"data": data, label_key: cyclic_labels(n).tolist(), "batch_label": "x"}
    return {k.encode(): v for k, v in batch.items()} if bytes_keys else batch


def write_pickle(path: Path, obj: object, protocol: int) -> None:
    path.write_bytes(pickle.dumps(obj, protocol=protocol))


def write_cifar10(root: Path, protocol: int = 2) -> Path:
    """``root/cifar-10-batches-py`` with 5 train batches of 8 and a test batch of 20."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for i in range(1, 6):
        write_pickle(folder / f"data_batch_{i}", cifar_batch(8, i, "labels", True), protocol)
    write_pickle(folder / "test_batch", cifar_batch(N_TEST, 9, "labels", True), protocol)
    names = [b"cat", b"dog", b"frog", b"ship"]
    write_pickle(folder / "batches.meta", {b"label_names": names, b"num_vis": 3072}, protocol)
    return folder


def write_cifar100(root: Path, protocol: int = 4) -> Path:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    train = cifar_batch(N_TRAIN, 1, "fine_labels", False)
    train["coarse_labels"] = [0] * N_TRAIN
    write_pickle(folder / "train", train, protocol)
    write_pickle(folder / "test", cifar_batch(N_TEST, 2, "fine_labels", False), protocol)
    meta = {"fine_label_names": ["apple", "bee", "cloud", "dolphin"], "coarse_label_names": []}
    write_pickle(folder / "meta", meta, protocol)
    return folder


def write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def write_imagefolder(root: Path, size=(5, 4), gray=False, test_name="test") -> Path:
    """``root/{train,test}/<class>/i.png`` with 10 train and 5 test images per class."""
    shape = (size[1], size[0]) if gray else (size[1], size[0], 3)
    classes = ["cat", "dog", "frog", "ship"]
    for split, n, seed in (("train", N_TRAIN, 0), (test_name, N_TEST, 1)):
        images, labels = unique_images(n, shape, seed), cyclic_labels(n)
        for i, (img, c) in enumerate(zip(images, labels, strict=True)):
            write_png(root / split / classes[c] / f"{i:03d}.png", img)
    return root


def write_npz_dir(root: Path, names: bool = True) -> Path:
    root.mkdir(parents=True)
    extra = {"class_names": np.array(["a", "b", "c", "d"])} if names else {}
    x_train, x_test = unique_images(N_TRAIN, (6, 6, 3), 0), unique_images(N_TEST, (6, 6, 3), 1)
    np.savez(root / "train.npz", x=x_train, y=cyclic_labels(N_TRAIN), **extra)
    np.savez(root / "test.npz", x=x_test, y=cyclic_labels(N_TEST))
    return root


def write_npz_file(path: Path, **override) -> Path:
    arrays = {
        "x_train": unique_images(N_TRAIN, (6, 6), 0),
        "y_train": cyclic_labels(N_TRAIN),
        "x_test": unique_images(N_TEST, (6, 6), 1),
        "y_test": cyclic_labels(N_TEST),
    }
    arrays.update(override)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


def write_hub_parquet(root: Path, size: int) -> Path:
    """``root/data/{train,valid}-00000-of-00001.parquet``: PNG bytes, the Hub's metadata."""
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    names = ["cat", "dog", "frog", "ship"]
    hub = {"info": {"features": {"label": {"names": names, "_type": "ClassLabel"}}}}
    for split, n, seed in (("train", N_TRAIN, 0), ("valid", N_TEST, 1)):
        pngs = []
        for img in unique_images(n, (size, size, 3), seed):
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="PNG")
            pngs.append({"bytes": buf.getvalue(), "path": None})
        table = pa.table({"image": pngs, "label": pa.array(cyclic_labels(n), pa.int64())})
        table = table.replace_schema_metadata({"huggingface": json.dumps(hub)})
        (root / "data").mkdir(parents=True, exist_ok=True)
        pq.write_table(table, root / "data" / f"{split}-00000-of-00001.parquet")
    return root


# ---- every registered dataset, through load_dataset ------------------------------------------

DIGITS = Expected(None, 1797 - 450, 450, (1, 8, 8), [str(c) for c in range(10)])
MAKERS: dict[str, Callable[[Path], Expected]] = {
    "digits": lambda tmp: DIGITS,
    "mnist": lambda tmp: Expected(
        write_idx(tmp / "mnist", gz=True), N_TRAIN, N_TEST, (1, 7, 6), [str(c) for c in range(10)]
    ),
    "fashion-mnist": lambda tmp: Expected(
        write_idx(tmp / "fm", gz=False), N_TRAIN, N_TEST, (1, 7, 6), FASHION_CLASSES
    ),
    "cifar10": lambda tmp: Expected(
        write_cifar10(tmp), 40, N_TEST, (3, 32, 32), ["cat", "dog", "frog", "ship"]
    ),
    "cifar100": lambda tmp: Expected(
        write_cifar100(tmp), N_TRAIN, N_TEST, (3, 32, 32), ["apple", "bee", "cloud", "dolphin"]
    ),
    "imagefolder": lambda tmp: Expected(
        write_imagefolder(tmp / "folder"),
        N_TRAIN,
        N_TEST,
        (3, 4, 5),
        ["cat", "dog", "frog", "ship"],
    ),
    "npz": lambda tmp: Expected(
        write_npz_dir(tmp / "npz"), N_TRAIN, N_TEST, (3, 6, 6), ["a", "b", "c", "d"]
    ),
    "parquet": lambda tmp: Expected(
        write_hub_parquet(tmp / "pq", 6), N_TRAIN, N_TEST, (3, 6, 6), ["cat", "dog", "frog", "ship"]
    ),
    "tiny-imagenet": lambda tmp: Expected(
        write_hub_parquet(tmp / "ti", 64),
        N_TRAIN,
        N_TEST,
        (3, 64, 64),
        ["cat", "dog", "frog", "ship"],
    ),
}


def test_every_registered_dataset_has_a_maker():
    assert sorted(MAKERS) == DATASETS.names()


def rows(images: torch.Tensor) -> set[bytes]:
    return {img.numpy().tobytes() for img in images}


@pytest.mark.parametrize("name", DATASETS.names())
def test_load_registered_dataset(name, tmp_path):
    exp = MAKERS[name](tmp_path)
    ds = load_dataset(name, exp.data_dir, cache_dir=tmp_path / "cache")
    assert ds.name == name
    assert ds.class_names == exp.class_names
    for split in (ds.train, ds.val, ds.test):
        assert split.images.dtype == torch.uint8 and split.labels.dtype == torch.int64
        assert tuple(split.images.shape[1:]) == exp.shape
    assert len(ds.train) + len(ds.val) == exp.n_train
    assert len(ds.test) == exp.n_test
    # validation: stratified (every class of train is in val) and disjoint from train
    assert set(ds.val.labels.tolist()) == set(ds.train.labels.tolist())
    assert 0.05 * exp.n_train <= len(ds.val) <= 0.25 * exp.n_train
    if name != "digits":  # our images are unique, so equal bytes means the same image
        assert not rows(ds.train.images) & rows(ds.val.images)
    # normalisation statistics come from the training split
    x = ds.train.images.float() / 255
    assert torch.allclose(torch.tensor(ds.mean), x.mean(dim=(0, 2, 3)), atol=1e-4)
    assert torch.allclose(torch.tensor(ds.std), x.std(dim=(0, 2, 3)), atol=1e-4)
    normed = ds.normalize(ds.train.images).mean(dim=(0, 2, 3))
    assert torch.allclose(normed, torch.zeros(ds.channels), atol=1e-3)
    # class index
    index = ds.class_indices("train")
    assert len(index) == ds.num_classes
    assert sum(len(i) for i in index) == len(ds.train)
    for c, idx in enumerate(index):
        assert bool((ds.train.labels[idx] == c).all())


def test_digits_split_is_fixed():
    a, b = load_dataset("digits"), load_dataset("digits")
    assert torch.equal(a.test.images, b.test.images)
    assert torch.equal(a.val.labels, b.val.labels)
    assert a.train.images.max() == 255
    assert np.bincount(a.test.labels.numpy()).min() >= 40  # 25 % of each ~180-image class
    c = load_dataset("digits", split_seed=1)
    assert torch.equal(a.test.images, c.test.images)
    assert not torch.equal(a.val.images, c.val.images)


def test_resize_array_dataset():
    ds = load_dataset("digits", resize=16)
    assert tuple(ds.train.images.shape[1:]) == (1, 16, 16)


def test_describe_datasets():
    table = {row["name"]: row for row in describe_datasets()}
    assert sorted(table) == DATASETS.names()
    assert table["digits"]["found"] and table["digits"]["location"] == "built in"
    assert table["fashion-mnist"]["location"] == "/usr/share/datasets/fashion-mnist"
    assert table["npz"]["location"] is None and not table["npz"]["found"]


# ---- IDX ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["MNIST/raw", "raw"])
def test_mnist_torchvision_layout(tmp_path, layout):
    write_idx(tmp_path / layout, gz=False)
    ds = load_dataset("mnist", tmp_path)
    assert len(ds.train) + len(ds.val) == N_TRAIN


def test_fashion_torchvision_layout_and_default_dir(tmp_path):
    write_idx(tmp_path / "FashionMNIST" / "raw", gz=True)
    assert load_dataset("fashion-mnist", tmp_path).class_names[-1] == "Ankle boot"
    assert DATASETS.get("fashion-mnist").find(None) == Path("/usr/share/datasets/fashion-mnist")


def test_idx_count_mismatch(tmp_path):
    folder = write_idx(tmp_path, gz=False)
    (folder / "train-labels-idx1-ubyte").write_bytes(idx_bytes(cyclic_labels(N_TRAIN - 1, 10)))
    with pytest.raises(DataError, match="train-images-idx3-ubyte: 40 images but .* 39 labels"):
        load_dataset("mnist", folder)


def test_idx_label_out_of_range(tmp_path):
    folder = write_idx(tmp_path, gz=True, train_labels=np.full(N_TRAIN, 10))
    with pytest.raises(DataError, match=r"labels out of range \[0, 9\]"):
        load_dataset("mnist", folder)


def test_idx_corrupt_gz(tmp_path):
    folder = write_idx(tmp_path, gz=True)
    path = folder / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz: corrupt or truncated gzip"):
        load_dataset("mnist", folder)
    path.write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz"):
        load_dataset("mnist", folder)


def test_idx_bad_header_and_truncated_body(tmp_path):
    folder = write_idx(tmp_path, gz=False)
    path = folder / "t10k-images-idx3-ubyte"
    good = path.read_bytes()
    path.write_bytes(b"\x01\x02" + good[2:])
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte: not an IDX file"):
        load_dataset("mnist", folder)
    path.write_bytes(good[:-5])
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte: IDX header says"):
        load_dataset("mnist", folder)
    path.write_bytes(idx_bytes(cyclic_labels(N_TEST)))  # a label file where images belong
    with pytest.raises(DataError, match="expected a 3-dimensional IDX file"):
        load_dataset("mnist", folder)


def test_idx_missing_file(tmp_path):
    folder = write_idx(tmp_path, gz=True)
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match=r"no t10k-labels-idx1-ubyte\[.gz\] found"):
        load_dataset("mnist", folder)


# ---- CIFAR -------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar_pickle_protocols_and_batches_folder(tmp_path, protocol):
    folder = write_cifar10(tmp_path, protocol=protocol)
    ds = load_dataset("cifar10", folder)  # the batches folder itself, not its parent
    assert ds.class_names == ["cat", "dog", "frog", "ship"]
    # CIFAR stores each row as 1024 R, then 1024 G, then 1024 B values
    batch = pickle.loads((folder / "test_batch").read_bytes())
    first = batch[b"data"][0].reshape(3, 32, 32)
    assert torch.equal(ds.test.images[0], torch.from_numpy(first))


class Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_cifar_refuses_malicious_pickle(tmp_path):
    folder = write_cifar10(tmp_path)
    marker = tmp_path / "pwned"
    write_pickle(folder / "test_batch", {b"data": Evil(marker)}, 2)
    with pytest.raises(DataError, match=r"test_batch: refusing to unpickle (posix|nt)\.system"):
        load_dataset("cifar10", tmp_path)
    assert not marker.exists()
    write_pickle(folder / "test_batch", {b"data": Expected(None, 0, 0, (1, 1, 1), [])}, 2)
    with pytest.raises(DataError, match="refusing to unpickle test_data.Expected"):
        load_dataset("cifar10", tmp_path)


def test_cifar_corrupt_and_missing(tmp_path):
    folder = write_cifar100(tmp_path)
    (folder / "test").write_bytes((folder / "test").read_bytes()[:100])
    with pytest.raises(DataError, match="cifar-100-python/test: corrupt pickle"):
        load_dataset("cifar100", tmp_path)
    (folder / "test").unlink()
    with pytest.raises(DataError, match="no test here or in"):
        load_dataset("cifar100", tmp_path)


def test_cifar_label_count_mismatch(tmp_path):
    folder = write_cifar10(tmp_path)
    batch = cifar_batch(8, 3, "labels", True)
    batch[b"labels"] = batch[b"labels"][:-1]
    write_pickle(folder / "data_batch_3", batch, 2)
    with pytest.raises(DataError, match="data_batch_3: 8 images but 7 labels"):
        load_dataset("cifar10", tmp_path)


# ---- image folders -----------------------------------------------------------------------------


def test_imagefolder_val_and_grayscale(tmp_path):
    write_imagefolder(tmp_path, gray=True, test_name="val")
    ds = load_dataset("imagefolder", tmp_path, cache_dir=tmp_path / "cache")
    assert ds.channels == 1 and ds.image_size == (4, 5) and len(ds.test) == N_TEST


def test_imagefolder_mixed_gray_and_rgb_become_rgb(tmp_path):
    write_imagefolder(tmp_path)
    write_png(tmp_path / "train" / "cat" / "gray.png", np.zeros((4, 5), dtype=np.uint8))
    ds = load_dataset("imagefolder", tmp_path)
    assert ds.channels == 3
    assert (
        len(list((tmp_path / "default-cache" / "imagefolder").iterdir())) == 1
        and len(ds.train) + len(ds.val) == N_TRAIN + 1
    )


def test_imagefolder_sizes_differ(tmp_path):
    write_imagefolder(tmp_path, size=(5, 4))
    write_png(tmp_path / "test" / "dog" / "big.png", np.zeros((9, 9, 3), dtype=np.uint8))
    with pytest.raises(
        DataError,
        match=r"big.png: image is 9×9 but cat/000.png is 5×4; pass resize=N \(--resize N\)",
    ):
        load_dataset("imagefolder", tmp_path, cache_dir=tmp_path / "cache")
    ds = load_dataset("imagefolder", tmp_path, resize=8, cache_dir=tmp_path / "cache")
    assert ds.image_size == (8, 8)


def test_imagefolder_unknown_test_class(tmp_path):
    write_imagefolder(tmp_path)
    write_png(tmp_path / "test" / "zebra" / "0.png", np.zeros((4, 5, 3), dtype=np.uint8))
    with pytest.raises(DataError, match="class 'zebra' is not among the train classes"):
        load_dataset("imagefolder", tmp_path)


def test_imagefolder_corrupt_image(tmp_path):
    write_imagefolder(tmp_path)
    (tmp_path / "train" / "dog" / "001.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(DataError, match="dog/001.png: cannot decode image"):
        load_dataset("imagefolder", tmp_path, cache_dir=tmp_path / "cache")


def test_imagefolder_layout_errors(tmp_path):
    (tmp_path / "train").mkdir()
    with pytest.raises(DataError, match="no test/ or val/"):
        load_dataset("imagefolder", tmp_path)
    (tmp_path / "test").mkdir()
    with pytest.raises(DataError, match="no class folders"):
        load_dataset("imagefolder", tmp_path)
    (tmp_path / "train" / "empty").mkdir()
    with pytest.raises(DataError, match="empty: class folder has no images"):
        load_dataset("imagefolder", tmp_path)


def test_imagefolder_tiny_imagenet_val(tmp_path):
    for c in ("n01", "n02"):
        for i in range(3):
            write_png(
                tmp_path / "train" / c / "images" / f"{c}_{i}.JPEG", np.full((4, 4, 3), i, np.uint8)
            )
    write_png(tmp_path / "val" / "images" / "val_0.JPEG", np.zeros((4, 4, 3), np.uint8))
    write_png(tmp_path / "val" / "images" / "val_1.JPEG", np.zeros((4, 4, 3), np.uint8))
    (tmp_path / "val" / "val_annotations.txt").write_text(
        "val_0.JPEG\tn02\t0\t0\t4\t4\nval_1.JPEG\tn01\t0\t0\t4\t4\n"
    )
    ds = load_dataset("imagefolder", tmp_path)
    assert ds.class_names == ["n01", "n02"] and ds.test.labels.tolist() == [1, 0]


def test_imagefolder_cache_reused_and_invalidated(tmp_path, monkeypatch):
    write_imagefolder(tmp_path / "data")
    cache = tmp_path / "cache"
    first = load_dataset("imagefolder", tmp_path / "data", cache_dir=cache)
    files = list((cache / "imagefolder").iterdir())
    assert len(files) == 1 and files[0].suffix == ".npz"

    def refuse(*args, **kwargs):
        raise AssertionError("decoded an image although the cache is valid")

    monkeypatch.setattr(Image, "open", refuse)
    second = load_dataset("imagefolder", tmp_path / "data", cache_dir=cache)
    assert torch.equal(first.train.images, second.train.images)
    assert first.class_names == second.class_names and first.source == second.source

    # changing a file changes the key, so the next load decodes again
    monkeypatch.undo()
    changed = tmp_path / "data" / "train" / "cat" / "000.png"
    write_png(changed, np.full((4, 5, 3), 7, dtype=np.uint8))
    os.utime(changed, ns=(time.time_ns(), time.time_ns() + 10**9))
    monkeypatch.setattr(Image, "open", refuse)
    with pytest.raises(AssertionError, match="decoded an image"):
        load_dataset("imagefolder", tmp_path / "data", cache_dir=cache)


def test_imagefolder_corrupt_cache_is_a_miss(tmp_path):
    write_imagefolder(tmp_path / "data")
    cache = tmp_path / "cache"
    load_dataset("imagefolder", tmp_path / "data", cache_dir=cache)
    (cached,) = (cache / "imagefolder").iterdir()
    cached.write_bytes(b"garbage")
    ds = load_dataset("imagefolder", tmp_path / "data", cache_dir=cache)
    assert len(ds.test) == N_TEST


def test_cache_root_env(monkeypatch, tmp_path):
    from exdistill.data import cache_root

    monkeypatch.setenv("EXDISTILL_CACHE", str(tmp_path))
    assert cache_root() == tmp_path
    monkeypatch.delenv("EXDISTILL_CACHE")
    assert cache_root() == Path.home() / ".cache" / "exdistill"


# ---- npz ---------------------------------------------------------------------------------------


def test_npz_single_file_without_names(tmp_path):
    path = write_npz_file(tmp_path / "data.npz")
    ds = load_dataset("npz", path)
    assert ds.class_names == ["0", "1", "2", "3"] and ds.channels == 1


def test_npz_count_mismatch_and_range(tmp_path):
    path = write_npz_file(tmp_path / "a.npz", y_train=cyclic_labels(N_TRAIN - 2))
    with pytest.raises(DataError, match="40 images but 38 labels"):
        load_dataset("npz", path)
    names = np.array(["a", "b", "c"])
    path = write_npz_file(tmp_path / "b.npz", class_names=names)
    with pytest.raises(DataError, match=r"labels out of range \[0, 2\]"):
        load_dataset("npz", path)


def test_npz_bad_contents(tmp_path):
    path = write_npz_file(tmp_path / "a.npz", y_train=cyclic_labels(N_TRAIN).astype(float))
    with pytest.raises(DataError, match="'y_train' must hold integer labels"):
        load_dataset("npz", path)
    path = write_npz_file(tmp_path / "b.npz", x_test=np.zeros((N_TEST, 6, 6), np.float32))
    with pytest.raises(DataError, match="must be uint8"):
        load_dataset("npz", path)
    bad = tmp_path / "c.npz"
    np.savez(bad, x=np.zeros(3))
    with pytest.raises(DataError, match="c.npz: missing array.*x_train"):
        load_dataset("npz", bad)
    obj = tmp_path / "d.npz"
    write_npz_file(obj, y_test=np.array([None] * N_TEST, dtype=object))
    with pytest.raises(DataError, match="d.npz: corrupt or unreadable"):
        load_dataset("npz", obj)


def test_npz_corrupt_file(tmp_path):
    folder = write_npz_dir(tmp_path / "npz", names=False)
    (folder / "test.npz").write_bytes(b"PK\x03\x04 definitely not a zip")
    with pytest.raises(DataError, match="test.npz: corrupt or unreadable"):
        load_dataset("npz", folder)
    (folder / "test.npz").unlink()
    with pytest.raises(DataError, match="test.npz: no such file"):
        load_dataset("npz", folder)


# ---- errors common to all ----------------------------------------------------------------------


def test_unknown_dataset_name():
    with pytest.raises(ConfigError, match="unknown dataset 'imagenet'; choose from: cifar10"):
        load_dataset("imagenet")


@pytest.mark.parametrize("name", [n for n in DATASETS.names() if DATASETS.get(n).needs_dir])
def test_missing_path(name, tmp_path):
    with pytest.raises(DataError, match=f"{tmp_path / 'nope'}: no such file or directory"):
        load_dataset(name, tmp_path / "nope")


def test_no_directory_given():
    with pytest.raises(DataError, match="dataset 'mnist' needs a data directory"):
        load_dataset("mnist")


def test_bad_options(tmp_path):
    with pytest.raises(ConfigError, match="val_fraction"):
        load_dataset("digits", val_fraction=1.0)
    with pytest.raises(ConfigError, match="resize"):
        load_dataset("digits", resize=0)
    with pytest.raises(ConfigError, match="built in"):
        load_dataset("digits", tmp_path)


def test_file_where_directory_expected(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(DataError, match="expected a directory for dataset 'cifar10'"):
        load_dataset("cifar10", tmp_path / "f")


# ---- the real data in ../shared/data (developers and CI only) ---------------------------------


@pytest.mark.slow
def test_real_fashion_mnist():
    folder = SHARED_DATA / "fashion-mnist"
    if not folder.is_dir():
        pytest.skip(f"{folder} not present")
    ds = load_dataset("fashion-mnist", folder)
    assert len(ds.train) + len(ds.val) == 60_000 and len(ds.test) == 10_000
    assert len(ds.val) == 6_000 and np.bincount(ds.val.labels.numpy()).tolist() == [600] * 10
    assert tuple(ds.train.images.shape[1:]) == (1, 28, 28)
    assert abs(ds.mean[0] - 0.286) < 0.01 and abs(ds.std[0] - 0.353) < 0.01


@pytest.mark.slow
def test_real_cifar10_jpeg(tmp_path):
    folder = SHARED_DATA / "cifar10-jpeg"
    if not folder.is_dir():
        pytest.skip(f"{folder} not present")
    ds = load_dataset("imagefolder", folder, cache_dir=tmp_path)
    assert len(ds.train) + len(ds.val) == 50_000 and len(ds.test) == 10_000
    assert tuple(ds.train.images.shape[1:]) == (3, 32, 32)
    assert ds.class_names[:3] == ["airplane", "automobile", "bird"]
    assert np.bincount(ds.test.labels.numpy()).tolist() == [1000] * 10
    again = load_dataset("imagefolder", folder, cache_dir=tmp_path)  # from the cache
    assert torch.equal(ds.test.images, again.test.images)
