"""``parquet`` and ``tiny-imagenet``: image datasets in the Hugging Face Hub's parquet layout.

Shards: ``DIR/data/<split>-NNNNN-of-NNNNN.parquet`` as the Hub's ``push_to_hub`` writes them
(Tiny-ImageNet: ``data/train-00000-of-00002.parquet``, ``data/train-00001-of-00002.parquet``,
``data/valid-00000-of-00001.parquet``), or the same files directly in ``DIR``. Other Hub
spellings are accepted too: ``<split>.parquet``, ``<split>-<anything>.parquet`` (older uploads
append a fingerprint, ``train-00000-of-00001-5e9c8f2b.parquet``) and ``<split>/*.parquet`` (the
Hub's converted-parquet branch, ``default/train/0000.parquet``). When shard names say
``-of-NNNNN``, every shard of the split must be present.

Splits: ``train`` is the training split; the test split is ``test``, else ``valid``, else
``validation``. exdistill's validation split is never a parquet split: ``build_dataset`` always
carves it from train (a fixed stratified ``val_fraction``, 10 % by default). So a Hub ``valid``
split becomes the TEST split when there is no ``test``: Tiny-ImageNet's official test set is
unlabelled, and its labelled validation set is the test set published results report on.

Columns: ``image`` is the Hub's Image feature, a struct whose ``bytes`` hold the original file
(``path`` is used in messages only), or plain binary; any format Pillow reads. ``label`` holds
integer class indices.

Class names, first found: the ``huggingface`` key of the parquet schema metadata (JSON; the
Hub's ClassLabel names at ``info.features.label.names``; shards that carry them must agree); else
``classes.txt`` beside the shards or in ``DIR``, one name per line in label order, text after a
tab ignored (Tiny-ImageNet's ``classes.txt`` reads ``<wnid>\\t<words>``); else ``"0"`` ..
``"L"`` with ``L`` the largest label.

Channels follow the image-folder rule: grayscale images decode to one channel, every other mode
(palette, RGBA, CMYK, ...) to RGB with alpha dropped; the dataset has one channel only when every
image is grayscale, otherwise grayscale images are widened to RGB. Unlike a majority or
first-image vote this never throws colour away (Tiny-ImageNet: a few grayscale JPEGs among RGB).

All images must have one size unless ``resize`` is given. Decoded arrays are cached like image
folders (``cache_dir/parquet/*.npz``, keyed by ``DIR``, ``resize`` and every shard's path,
split, size and mtime), so only the first load decodes. pyarrow is an optional dependency
(``pip install 'exdistill[parquet]'``).
"""

from __future__ import annotations

import functools
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from PIL import Image

from exdistill.data.base import DATASETS, DatasetSpec, RawData
from exdistill.data.files import require_dir
from exdistill.data.imagefolder import (
    DECODE_ERRORS,
    cache_key,
    parallel_map,
    read_cache,
    stack_images,
    to_array,
    write_cache,
)
from exdistill.errors import ConfigError, DataError

TEST_SPLITS = ("test", "valid", "validation")  # in order of preference
SHARD_OF = re.compile(r"-(\d+)-of-(\d+)")
CACHE_VERSION = 1  # bump when this module's reading changes (the decoding has its own)


@dataclass
class Shard:
    """One parquet file's rows, read but not yet decoded."""

    path: Path
    split: str  # "train" or "test"
    images: list[bytes | None]
    names: list[str | None]  # the image column's ``path`` per row, for messages
    labels: np.ndarray
    class_names: list[str] | None  # from the huggingface schema metadata


def import_pyarrow(dataset: str) -> tuple[ModuleType, ModuleType]:
    """``(pyarrow, pyarrow.parquet)``.

    Raises:
        ConfigError: pyarrow is not installed (the data may be fine; this install cannot read it).
    """
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise ConfigError(
            f"dataset '{dataset}' needs pyarrow: pip install 'exdistill[parquet]'"
        ) from None
    return pyarrow, pyarrow.parquet


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def split_files(folder: Path, split: str) -> list[Path]:
    """The shards of ``split`` in ``folder`` in any of the spellings the module docstring lists."""
    files = [
        p
        for p in folder.glob("*.parquet")
        if p.is_file()
        and not p.name.startswith(".")
        and (p.stem == split or p.stem.startswith(f"{split}-"))
    ]
    if (folder / split).is_dir():
        files += [p for p in (folder / split).glob("*.parquet") if not p.name.startswith(".")]
    return sorted(files)


def check_complete(files: list[Path], split: str) -> None:
    """DataError when names like ``train-00001-of-00002`` show that a shard is missing."""
    found: dict[int, set[int]] = {}
    for p in files:
        if m := SHARD_OF.search(p.stem):
            found.setdefault(int(m.group(2)), set()).add(int(m.group(1)))
    for total, indices in found.items():
        missing = sorted(set(range(total)) - indices)
        if missing:
            listed = ", ".join(f"{i:05d}" for i in missing[:5]) + (
                " ..." if len(missing) > 5 else ""
            )
            raise DataError(
                f"{files[0].parent}: {split} shard(s) {listed} of {total:05d} missing "
                "(an incomplete download?)"
            )


def find_shards(root: Path) -> tuple[Path, list[Path], list[Path]]:
    """The folder holding the shards, the train shards and the test shards (see the docstring)."""
    for folder in (root / "data", root):
        train = split_files(folder, "train") if folder.is_dir() else []
        if train:
            break
    else:
        present = sorted({p.name for f in (root / "data", root) for p in f.glob("*.parquet")})
        found = f"found {', '.join(present[:6])}" if present else "found no .parquet files"
        raise DataError(
            f"{root}: no train split (expected data/train-00000-of-00001.parquet or "
            f"train*.parquet; {found})"
        )
    test_split, test = next(
        ((s, files) for s in TEST_SPLITS if (files := split_files(folder, s))), ("", [])
    )
    if not test:
        raise DataError(
            f"{folder}: no test split (looked for {', '.join(TEST_SPLITS)} shards beside train)"
        )
    check_complete(train, "train")
    check_complete(test, test_split)
    return folder, train, test


def metadata_names(path: Path, metadata: dict[bytes, bytes] | None) -> list[str] | None:
    """The Hub's ClassLabel names in the ``huggingface`` schema metadata, or None."""
    raw = (metadata or {}).get(b"huggingface")
    if raw is None:
        return None
    try:
        info: Any = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: 'huggingface' schema metadata is not JSON ({err})") from None
    names = info
    for key in ("info", "features", "label", "names"):  # other JSON shapes carry no names
        names = names.get(key) if isinstance(names, dict) else None
    if names is None:
        return None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise DataError(f"{path}: huggingface metadata label names are not a list of strings")
    return names


def read_shard(pa: ModuleType, pq: ModuleType, path: Path, split: str) -> Shard:
    """The image bytes, labels and metadata class names of one shard, checked but not decoded.

    Raises:
        DataError: unreadable parquet, a missing or mistyped ``image``/``label`` column, null
            labels, or malformed metadata; the message names ``path``.
    """
    try:
        pf = pq.ParquetFile(path)
        schema = pf.schema_arrow
        missing = [c for c in ("image", "label") if c not in schema.names]
        if missing:
            found = ", ".join(schema.names) or "none"
            raise DataError(f"{path}: no '{missing[0]}' column (columns: {found})")
        image_type, label_type = schema.field("image").type, schema.field("label").type
        is_struct = pa.types.is_struct(image_type)
        if is_struct and image_type.get_field_index("bytes") < 0:
            raise DataError(f"{path}: column 'image' is {image_type}, which has no 'bytes' field")
        if not is_struct and not (
            pa.types.is_binary(image_type) or pa.types.is_large_binary(image_type)
        ):
            raise DataError(
                f"{path}: column 'image' is {image_type}, expected the Hub's Image struct "
                "(bytes, path) or binary"
            )
        if not pa.types.is_integer(label_type):
            raise DataError(f"{path}: column 'label' is {label_type}, expected integers")
        table = pf.read(columns=["image", "label"])
    except DataError:
        raise
    except (pa.ArrowException, OSError, ValueError) as err:
        raise DataError(f"{path}: corrupt or unreadable parquet file ({_one_line(err)})") from None

    image = table.column("image")
    names: list[str | None]
    if is_struct:
        # flatten() folds the struct's own nulls into its fields; .field() would not
        keys = [image_type.field(i).name for i in range(image_type.num_fields)]
        fields = [dict(zip(keys, c.flatten(), strict=True)) for c in image.chunks]
        images = [b for f in fields for b in f["bytes"].to_pylist()]
        has_path = image_type.get_field_index("path") >= 0
        names = [n for f in fields for n in f["path"].to_pylist()] if has_path else []
    else:
        images, names = image.to_pylist(), []
    names = names or [None] * len(images)
    label = table.column("label")
    if label.null_count:
        row = int(np.flatnonzero(label.is_null().to_numpy(zero_copy_only=False))[0])
        raise DataError(f"{path}: {label.null_count} row(s) have no label (first: row {row})")
    labels = np.asarray(label.to_numpy(), dtype=np.int64)
    return Shard(path, split, images, names, labels, metadata_names(path, schema.metadata))


def read_classes_txt(path: Path) -> list[str]:
    """Class names from ``classes.txt``: one per line, text after a tab ignored."""
    try:
        lines = path.read_text().rstrip().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read ({err})") from None
    names = [line.split("\t")[0].strip() for line in lines]
    for lineno, name in enumerate(names, start=1):
        if not name:
            raise DataError(f"{path}:{lineno}: empty class name")
    dup = next((n for i, n in enumerate(names) if n in names[:i]), None)
    if dup is not None:
        raise DataError(f"{path}: class '{dup}' is listed twice")
    return names


def class_names(shards: list[Shard], classes_txt: Path | None) -> tuple[list[str], str]:
    """The class names by the docstring's rule, and where they came from (for messages)."""
    named = [s for s in shards if s.class_names is not None]
    if named:
        first = named[0]
        for s in named[1:]:
            if s.class_names != first.class_names:
                raise DataError(
                    f"{s.path}: class names in its huggingface metadata differ from "
                    f"{first.path.name}'s"
                )
        return first.class_names, f"the huggingface metadata of {first.path.name}"
    if classes_txt is not None:
        return read_classes_txt(classes_txt), str(classes_txt)
    top = max((int(s.labels.max()) for s in shards if s.labels.size), default=0)
    return [str(c) for c in range(top + 1)], "the label values"


def check_labels(shards: list[Shard], names: list[str], origin: str) -> None:
    """DataError naming the shard and row of the first label outside ``[0, len(names))``."""
    for s in shards:
        bad = np.flatnonzero((s.labels < 0) | (s.labels >= len(names)))
        if bad.size:
            row, value = int(bad[0]), int(s.labels[bad[0]])
            hint = " (-1 marks an unlabelled row on the Hub)" if value == -1 else ""
            raise DataError(
                f"{s.path}: label {value} at row {row} is out of range [0, {len(names) - 1}] "
                f"({len(names)} class names from {origin}){hint}"
            )


def decode_bytes(data: bytes | None, where: str, resize: int | None) -> np.ndarray:
    """One embedded image as :func:`~exdistill.data.imagefolder.to_array` makes it."""
    if data is None:
        raise DataError(
            f"{where}: no image bytes (the row refers to a file instead of embedding it)"
        )
    try:
        with Image.open(io.BytesIO(data)) as img:
            return to_array(img, resize)
    except DECODE_ERRORS as err:
        raise DataError(f"{where}: cannot decode image ({_one_line(err)})") from None


def load_parquet(
    data_dir: Path | None,
    *,
    dataset: str = "parquet",
    image_size: int | None = None,
    resize: int | None = None,
    cache_dir: Path | None = None,
    **_: object,
) -> RawData:
    """Load Hub parquet shards as the module docstring describes.

    Args:
        data_dir: the dataset folder (holding ``data/`` or the shards themselves).
        dataset: the registered name, for messages.
        image_size: the side every image must have (without ``resize``); None: any one size.
        resize: make images ``resize×resize`` (bilinear) while decoding.
        cache_dir: cache root (``parquet/*.npz`` below it); None: no cache.

    Raises:
        ConfigError: pyarrow is not installed.
        DataError: missing splits or shards, unreadable files or images, labels out of range,
            a class without train images, or images of mixed sizes (or not ``image_size``).
    """
    pa, pq = import_pyarrow(dataset)
    if data_dir is None:
        raise DataError(f"dataset '{dataset}' needs a data directory")
    root = require_dir(data_dir, dataset)
    folder, train_files, test_files = find_shards(root)
    classes_txt = next(
        (p for p in (folder / "classes.txt", root / "classes.txt") if p.is_file()), None
    )

    raw = None
    cache_file = None
    if cache_dir is not None:
        items: list[tuple[Path, object]] = [
            (p, f"{split}:v{CACHE_VERSION}")
            for split, files in (("train", train_files), ("test", test_files))
            for p in files
        ]
        if classes_txt is not None:
            items.append((classes_txt, "classes"))
        key = cache_key(root, resize, items)
        cache_file = Path(cache_dir) / "parquet" / f"{root.resolve().name}-{key}.npz"
        raw = read_cache(cache_file)
    if raw is None:
        raw = decode_shards(pa, pq, root, train_files, test_files, classes_txt, resize)
        if cache_file is not None:
            write_cache(cache_file, raw)
    if image_size is not None and resize is None:
        h, w = raw.train_images.shape[1:3]
        if (h, w) != (image_size, image_size):
            raise DataError(
                f"{root}: dataset '{dataset}' has {image_size}×{image_size} images, these are "
                f"{w}×{h} (use --dataset parquet for other data)"
            )
    return raw


def decode_shards(
    pa: ModuleType,
    pq: ModuleType,
    root: Path,
    train_files: list[Path],
    test_files: list[Path],
    classes_txt: Path | None,
    resize: int | None,
) -> RawData:
    """Read every shard, check names and labels, then decode all images (the slow part)."""
    shards = [read_shard(pa, pq, p, "train") for p in train_files]
    shards += [read_shard(pa, pq, p, "test") for p in test_files]
    names, origin = class_names(shards, classes_txt)
    check_labels(shards, names, origin)
    train = [s for s in shards if s.split == "train"]
    train_labels = np.concatenate([s.labels for s in train])
    test_labels = np.concatenate([s.labels for s in shards if s.split == "test"])
    counts = np.bincount(train_labels, minlength=len(names))
    if (counts == 0).any():
        c = int(np.flatnonzero(counts == 0)[0])
        raise DataError(f"{root}: class '{names[c]}' (label {c}) has no train images")

    rows = [(s, r) for s in shards for r in range(len(s.images))]

    def where(i: int) -> str:
        s, r = rows[i]
        return f"{s.path} row {r}" + (f" ({s.names[r]})" if s.names[r] else "")

    arrays = parallel_map(
        lambda i: decode_bytes(rows[i][0].images[rows[i][1]], where(i), resize),
        list(range(len(rows))),
    )
    images = stack_images(arrays, where, f"{shards[0].path.name} row 0")
    n = len(train_labels)
    return RawData(
        train_images=images[:n],
        train_labels=train_labels,
        test_images=images[n:],
        test_labels=test_labels,
        class_names=names,
        source=str(root),
    )


DATASETS.add(
    "parquet",
    DatasetSpec(
        name="parquet",
        load=load_parquet,
        description="Hugging Face Hub parquet: DIR/data/{train,test|valid}-*.parquet "
        "(image, label); needs pyarrow",
        default_dir=None,
    ),
)
DATASETS.add(
    "tiny-imagenet",
    DatasetSpec(
        name="tiny-imagenet",
        load=functools.partial(load_parquet, dataset="tiny-imagenet", image_size=64),
        description="Tiny-ImageNet-200 as Hub parquet (DIR/data/{train,valid}-*.parquet, "
        "valid is the test split); needs pyarrow",
        default_dir=None,
        image_size=64,
    ),
)
