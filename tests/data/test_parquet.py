"""The parquet loader: tiny Hub-layout shards written with pyarrow in ``tmp_path``."""

from __future__ import annotations

import io
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from exdistill.data import DATASETS, load_dataset
from exdistill.errors import ConfigError, DataError

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

SHARED_TINY = Path(__file__).parents[2].parent / "shared" / "data" / "tiny-imagenet"
CLASSES = ["cat", "dog", "frog"]
N_TRAIN, N_TEST = 12, 6  # per split, classes cycle 0, 1, 2, ...


def rgb(i: int, size: int = 8) -> np.ndarray:
    """A random colour image, first pixel ``i`` so no two are equal."""
    x = np.random.default_rng(i).integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    x[0, 0, 0] = i
    return x


def encode(image: Image.Image | np.ndarray, fmt: str = "PNG") -> bytes:
    img = Image.fromarray(image) if isinstance(image, np.ndarray) else image
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def write_shard(
    path: Path,
    images: list[bytes | None],
    labels: list[int],
    names: list[str] | None = CLASSES,
    **extra: list,
) -> Path:
    """One shard as the Hub writes it: ``image`` struct (bytes, path), ``label`` int64, and the
    ClassLabel names in the ``huggingface`` schema metadata (left out when ``names`` is None)."""
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    paths = [f"img_{i}.png" for i in range(len(images))]
    columns = {
        "image": pa.array(
            [{"bytes": b, "path": p} for b, p in zip(images, paths, strict=True)], image_type
        ),
        "label": pa.array(labels, pa.int64()),
        **{k: pa.array(v) for k, v in extra.items()},
    }
    table = pa.table(columns)
    if names is not None:
        features = {"image": {"_type": "Image"}, "label": {"names": names, "_type": "ClassLabel"}}
        meta = {"huggingface": json.dumps({"info": {"features": features}})}
        table = table.replace_schema_metadata(meta)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def write_dataset(
    root: Path,
    *,
    names: list[str] | None = CLASSES,
    test_split: str = "test",
    train_shards: int = 2,
    image=lambda i: encode(rgb(i)),
) -> Path:
    """``root/data/train-0000k-of-0000n.parquet`` and ``root/data/<test_split>-...parquet``."""
    labels = [i % len(CLASSES) for i in range(N_TRAIN)]
    per = N_TRAIN // train_shards
    for k in range(train_shards):
        rows = range(k * per, (k + 1) * per)
        write_shard(
            root / "data" / f"train-{k:05d}-of-{train_shards:05d}.parquet",
            [image(i) for i in rows],
            [labels[i] for i in rows],
            names,
        )
    write_shard(
        root / "data" / f"{test_split}-00000-of-00001.parquet",
        [image(100 + i) for i in range(N_TEST)],
        [(i + 1) % len(CLASSES) for i in range(N_TEST)],
        names,
    )
    return root


def load(root: Path, name: str = "parquet", **kw):
    return load_dataset(name, root, val_fraction=0.0, **kw)


def error(root: Path, **kw) -> str:
    """The one-line DataError message of loading ``root``."""
    with pytest.raises(DataError) as info:
        load(root, **kw)
    message = str(info.value)
    assert "\n" not in message
    return message


# ---- loading -----------------------------------------------------------------------------------


def test_load_train_and_test_with_hub_metadata(tmp_path):
    write_dataset(tmp_path)
    ds = load(tmp_path)
    assert ds.class_names == CLASSES and ds.source == str(tmp_path)
    assert tuple(ds.train.images.shape) == (N_TRAIN, 3, 8, 8)
    assert tuple(ds.test.images.shape) == (N_TEST, 3, 8, 8)
    # shard order then row order: train-00000 rows, train-00001 rows
    assert ds.train.labels.tolist() == [i % 3 for i in range(N_TRAIN)]
    assert ds.test.labels.tolist() == [(i + 1) % 3 for i in range(N_TEST)]
    assert torch.equal(ds.train.images[7], torch.from_numpy(rgb(7)).permute(2, 0, 1))
    assert torch.equal(ds.test.images[0], torch.from_numpy(rgb(100)).permute(2, 0, 1))


def test_registered_specs():
    assert DATASETS.get("parquet").image_size is None
    assert DATASETS.get("tiny-imagenet").image_size == 64
    assert DATASETS.get("tiny-imagenet").default_dir is None


def test_validation_split_carved_from_train(tmp_path):
    write_dataset(tmp_path, test_split="valid")
    ds = load_dataset("parquet", tmp_path, val_fraction=0.25)
    assert len(ds.train) + len(ds.val) == N_TRAIN and len(ds.test) == N_TEST
    assert sorted(ds.val.labels.tolist()) == [0, 1, 2]


@pytest.mark.parametrize("split", ["valid", "validation"])
def test_valid_split_is_the_test_split(tmp_path, split):
    write_dataset(tmp_path, test_split=split)
    assert len(load(tmp_path).test) == N_TEST


def test_test_split_preferred_over_valid(tmp_path):
    write_dataset(tmp_path)
    write_shard(tmp_path / "data" / "valid-00000-of-00001.parquet", [encode(rgb(0))], [0])
    assert len(load(tmp_path).test) == N_TEST


@pytest.mark.parametrize(
    "train_name, test_name",
    [
        ("train-00000-of-00001.parquet", "test-00000-of-00001.parquet"),  # directly in DIR
        ("train-00000-of-00001-5e9c8f2b.parquet", "valid-00000-of-00001-a1b2.parquet"),
        ("train.parquet", "test.parquet"),
        ("train/0000.parquet", "validation/0000.parquet"),  # the Hub's converted branch
    ],
)
def test_shard_name_variants(tmp_path, train_name, test_name):
    write_shard(tmp_path / train_name, [encode(rgb(i)) for i in range(6)], [0, 1, 2] * 2)
    write_shard(tmp_path / test_name, [encode(rgb(9))], [2])
    ds = load(tmp_path)
    assert len(ds.train) == 6 and ds.test.labels.tolist() == [2]


def test_class_names_from_classes_txt_then_label_values(tmp_path):
    write_dataset(tmp_path, names=None)
    assert load(tmp_path).class_names == ["0", "1", "2"]
    (tmp_path / "classes.txt").write_text("n01\tgoldfish, Carassius auratus\nn02\tbullfrog\nn03\n")
    assert load(tmp_path).class_names == ["n01", "n02", "n03"]
    (tmp_path / "data" / "classes.txt").write_text("c\nb\na\n")  # beside the shards wins
    assert load(tmp_path).class_names == ["c", "b", "a"]


def test_grayscale_only_gives_one_channel(tmp_path):
    gray = lambda i: encode(rgb(i)[..., 0])  # noqa: E731
    write_dataset(tmp_path, image=gray)
    ds = load(tmp_path)
    assert ds.channels == 1
    assert torch.equal(ds.train.images[3, 0], torch.from_numpy(rgb(3)[..., 0]))


def test_palette_rgba_cmyk_jpeg_and_gray_become_rgb(tmp_path):
    palette = Image.fromarray(rgb(1)).quantize(colors=16)
    rgba = np.dstack([rgb(2), np.full((8, 8), 128, np.uint8)])
    cmyk = encode(Image.fromarray(rgb(3)).convert("CMYK"), "JPEG")
    jpeg = encode(rgb(4), "JPEG")
    images = [
        encode(palette),
        encode(rgba),
        cmyk,
        jpeg,
        encode(rgb(5)[..., 0]),  # grayscale among colour: widened to RGB
        encode(rgb(6), "BMP"),
    ]
    write_shard(tmp_path / "train.parquet", images, [0, 1, 2, 0, 1, 2])
    write_shard(tmp_path / "test.parquet", [encode(rgb(7))], [0])
    ds = load(tmp_path)
    x = ds.train.images.permute(0, 2, 3, 1).numpy()
    assert ds.channels == 3
    assert np.array_equal(x[0], np.asarray(palette.convert("RGB")))
    assert np.array_equal(x[1], rgb(2))  # alpha dropped
    assert np.array_equal(x[4], np.repeat(rgb(5)[..., :1], 3, axis=2))
    assert np.array_equal(x[5], rgb(6))
    for i, data in ((2, cmyk), (3, jpeg)):  # lossy: compare with Pillow's own decoding
        with Image.open(io.BytesIO(data)) as img:
            assert np.array_equal(x[i], np.asarray(img.convert("RGB")))


def test_mixed_sizes_error_and_resize(tmp_path):
    write_dataset(tmp_path)
    shard = tmp_path / "data" / "test-00000-of-00001.parquet"
    write_shard(shard, [encode(rgb(0)), encode(rgb(1, size=9))], [0, 1])
    message = error(tmp_path)
    assert message.startswith(f"{shard} row 1 (img_1.png): image is 9×9")
    assert "but train-00000-of-00002.parquet row 0 is 8×8" in message
    assert load(tmp_path, resize=8).image_size == (8, 8)


def test_tiny_imagenet_is_parquet_with_64x64_images(tmp_path):
    write_dataset(tmp_path, image=lambda i: encode(rgb(i, size=64)), test_split="valid")
    ds = load(tmp_path, "tiny-imagenet")
    assert ds.name == "tiny-imagenet" and ds.image_size == (64, 64) and len(ds.test) == N_TEST
    small = tmp_path / "small"
    write_dataset(small)
    message = error(small, name="tiny-imagenet")
    assert "dataset 'tiny-imagenet' has 64×64 images, these are 8×8" in message


# ---- cache -------------------------------------------------------------------------------------


def test_cache_reused_and_invalidated(tmp_path, monkeypatch):
    write_dataset(tmp_path / "d")
    cache = tmp_path / "cache"
    first = load(tmp_path / "d", cache_dir=cache)
    (cached,) = (cache / "parquet").iterdir()
    assert cached.name.startswith("d-") and cached.suffix == ".npz"

    def refuse(*args, **kwargs):
        raise AssertionError("decoded an image although the cache is valid")

    monkeypatch.setattr(Image, "open", refuse)
    second = load(tmp_path / "d", cache_dir=cache)
    assert torch.equal(first.train.images, second.train.images)
    assert torch.equal(first.test.labels, second.test.labels)
    assert second.class_names == CLASSES and second.source == first.source

    # a rewritten shard changes the key, so the next load decodes again
    shard = tmp_path / "d" / "data" / "train-00001-of-00002.parquet"
    os.utime(shard, ns=(time.time_ns(), time.time_ns() + 10**9))
    with pytest.raises(AssertionError, match="decoded an image"):
        load(tmp_path / "d", cache_dir=cache)


def test_default_cache_root(tmp_path, monkeypatch):
    monkeypatch.setenv("EXDISTILL_CACHE", str(tmp_path / "root"))
    write_dataset(tmp_path / "d")
    load(tmp_path / "d")
    assert len(list((tmp_path / "root" / "parquet").glob("d-*.npz"))) == 1


# ---- errors ------------------------------------------------------------------------------------


def test_corrupt_parquet_file(tmp_path):
    write_dataset(tmp_path)
    shard = tmp_path / "data" / "train-00001-of-00002.parquet"
    shard.write_bytes(b"PAR1 not really parquet")
    assert error(tmp_path).startswith(f"{shard}: corrupt or unreadable parquet file (")
    data = (tmp_path / "data" / "test-00000-of-00001.parquet").read_bytes()
    shard.write_bytes(data[: len(data) // 2])  # truncated: no footer
    assert error(tmp_path).startswith(f"{shard}: corrupt or unreadable parquet file (")


def test_corrupt_image(tmp_path):
    write_dataset(tmp_path)
    shard = tmp_path / "data" / "test-00000-of-00001.parquet"
    write_shard(shard, [encode(rgb(0)), b"\x89PNG broken", encode(rgb(1))], [0, 1, 2])
    assert error(tmp_path).startswith(f"{shard} row 1 (img_1.png): cannot decode image (")


def test_image_without_bytes(tmp_path):
    write_dataset(tmp_path)
    shard = tmp_path / "data" / "test-00000-of-00001.parquet"
    write_shard(shard, [encode(rgb(0)), None], [0, 1])
    assert error(tmp_path).startswith(f"{shard} row 1 (img_1.png): no image bytes")


def test_missing_splits_and_shards(tmp_path):
    write_dataset(tmp_path)
    (tmp_path / "data" / "train-00000-of-00002.parquet").unlink()
    assert error(tmp_path) == (
        f"{tmp_path / 'data'}: train shard(s) 00000 of 00002 missing (an incomplete download?)"
    )
    (tmp_path / "data" / "train-00001-of-00002.parquet").unlink()
    message = error(tmp_path)
    assert message.startswith(f"{tmp_path}: no train split")
    assert "found test-00000-of-00001.parquet" in message
    write_dataset(tmp_path)
    (tmp_path / "data" / "test-00000-of-00001.parquet").unlink()
    assert error(tmp_path) == (
        f"{tmp_path / 'data'}: no test split (looked for test, valid, validation shards "
        "beside train)"
    )


def test_labels_out_of_range(tmp_path):
    write_dataset(tmp_path)
    shard = tmp_path / "data" / "test-00000-of-00001.parquet"
    write_shard(shard, [encode(rgb(0))] * 3, [0, 3, 1])
    assert error(tmp_path) == (
        f"{shard}: label 3 at row 1 is out of range [0, 2] (3 class names from the "
        "huggingface metadata of train-00000-of-00002.parquet)"
    )
    write_dataset(tmp_path, names=None)  # no metadata anywhere: names from the labels
    write_shard(shard, [encode(rgb(0))] * 2, [0, -1], names=None)
    message = error(tmp_path)
    assert message.startswith(f"{shard}: label -1 at row 1 is out of range")
    assert message.endswith("(-1 marks an unlabelled row on the Hub)")
    (tmp_path / "classes.txt").write_text("a\nb\n")  # too few names for train's labels 0..2
    assert error(tmp_path) == (
        f"{tmp_path / 'data' / 'train-00000-of-00002.parquet'}: label 2 at row 2 is out of "
        f"range [0, 1] (2 class names from {tmp_path / 'classes.txt'})"
    )


def test_class_without_train_images(tmp_path):
    write_dataset(tmp_path, names=["cat", "dog", "frog", "ship"])
    assert error(tmp_path) == f"{tmp_path}: class 'ship' (label 3) has no train images"


def test_bad_columns_and_metadata(tmp_path):
    write_dataset(tmp_path)
    shard = tmp_path / "data" / "test-00000-of-00001.parquet"
    pq.write_table(pa.table({"image": [b"x"], "target": [0]}), shard)
    assert error(tmp_path) == f"{shard}: no 'label' column (columns: image, target)"
    pq.write_table(pa.table({"image": ["text"], "label": [0]}), shard)
    assert "column 'image' is string, expected the Hub's Image struct" in error(tmp_path)
    pq.write_table(pa.table({"image": [encode(rgb(0))], "label": [0.5]}), shard)
    assert error(tmp_path) == f"{shard}: column 'label' is double, expected integers"
    table = pa.table({"image": [encode(rgb(0))], "label": [0]})
    pq.write_table(table.replace_schema_metadata({"huggingface": "{oops"}), shard)
    assert error(tmp_path).startswith(f"{shard}: 'huggingface' schema metadata is not JSON")
    write_shard(shard, [encode(rgb(0))], [0], names=["a", "b", "c"])
    assert error(tmp_path) == (
        f"{shard}: class names in its huggingface metadata differ from "
        "train-00000-of-00002.parquet's"
    )


def test_plain_binary_image_column(tmp_path):
    write_dataset(tmp_path)
    shard = tmp_path / "data" / "test-00000-of-00001.parquet"
    pq.write_table(pa.table({"image": [encode(rgb(3))], "label": [2]}), shard)
    ds = load(tmp_path)
    assert ds.test.labels.tolist() == [2]
    assert torch.equal(ds.test.images[0], torch.from_numpy(rgb(3)).permute(2, 0, 1))


@pytest.mark.parametrize("name", ["parquet", "tiny-imagenet"])
def test_missing_pyarrow(tmp_path, monkeypatch, name):
    write_dataset(tmp_path)
    # None in sys.modules makes `import pyarrow` raise ImportError, as when it is not installed
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(ConfigError) as info:
        load(tmp_path, name)
    assert str(info.value) == f"dataset '{name}' needs pyarrow: pip install 'exdistill[parquet]'"


# ---- the real data in ../shared/data (developers and CI only) ---------------------------------


@pytest.mark.slow
def test_real_tiny_imagenet():
    """Layout, schema, class names and the labels of every split, and a few decoded images.

    Cheap on purpose (about a second): a full load decodes 90,000 JPEGs, 41 s on two busy cores
    (about 20 s from the cache), for little more than what these checks cover.
    """
    if not SHARED_TINY.is_dir():
        pytest.skip(f"{SHARED_TINY} not present")
    from exdistill.data.parquet import class_names, decode_bytes, find_shards, read_shard

    folder, train, test = find_shards(SHARED_TINY)
    assert folder == SHARED_TINY / "data"
    assert [p.name for p in train] == [
        "train-00000-of-00002.parquet",
        "train-00001-of-00002.parquet",
    ]
    assert [p.name for p in test] == ["valid-00000-of-00001.parquet"]
    assert sum(pq.ParquetFile(p).metadata.num_rows for p in train) == 80_000
    valid = read_shard(pa, pq, test[0], "test")
    names, origin = class_names([valid], SHARED_TINY / "classes.txt")
    assert origin.startswith("the huggingface metadata")
    assert len(names) == 200 and names == sorted(names) and names[0] == "n01443537"
    assert np.bincount(valid.labels, minlength=200).tolist() == [50] * 200
    for row in range(16):
        image = decode_bytes(valid.images[row], f"row {row}", None)
        assert image.shape[:2] == (64, 64) and image.ndim in (2, 3)
