"""SyntheticSet: multi-formation decode/encode, construction, safe persistence, pictures."""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from exdistill import __version__
from exdistill.data import load_dataset
from exdistill.data.base import RawData, build_dataset
from exdistill.errors import ConfigError, DataError
from exdistill.synthetic import (
    SIDECAR_FILE,
    TENSORS_FILE,
    SyntheticSet,
    check_factor,
    decode,
    encode,
    sample_real,
)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def tiny_dataset(per_class: tuple[int, ...] = (6, 6, 6), size: int = 8, channels: int = 1):
    """A hand-made dataset: class c has ``per_class[c]`` train images (no validation split)."""
    gen = np.random.default_rng(0)
    labels = np.repeat(np.arange(len(per_class)), per_class)
    shape = (len(labels), size, size) + ((channels,) if channels > 1 else ())
    images = gen.integers(0, 256, size=shape, dtype=np.uint8)
    test_labels = np.arange(len(per_class))
    test_images = gen.integers(0, 256, size=(len(per_class), *shape[1:]), dtype=np.uint8)
    raw = RawData(
        images, labels, test_images, test_labels, [f"c{c}" for c in range(len(per_class))], "tiny"
    )
    return build_dataset("tiny", raw, val_fraction=0.0)


def tiled(values: torch.Tensor, tile: int) -> torch.Tensor:
    """Stored images ``(M, 1, f·tile, f·tile)``, tile (i, j) constant at ``values[m, i, j]``."""
    return values.repeat_interleave(tile, 1).repeat_interleave(tile, 2)[:, None]


# ----------------------------------------------------------------------------- decode / encode
def test_decode_factor_one_is_identity() -> None:
    x = torch.randn(3, 2, 8, 8)
    assert decode(x, 1) is x
    assert encode(x, 1) is x


@pytest.mark.parametrize("factor", [2, 3])
def test_decode_constant_tiles_gives_constant_images_in_row_major_order(factor: int) -> None:
    tile = 4
    values = torch.arange(2 * factor * factor, dtype=torch.float32).reshape(2, factor, factor)
    stored = tiled(values, tile)  # (2, 1, f·4, f·4)
    out = decode(stored, factor)
    size = factor * tile
    assert out.shape == (2 * factor * factor, 1, size, size)
    expected = values.reshape(-1)  # image m, tile (i, j) → index m·f² + i·f + j
    assert torch.allclose(out, expected[:, None, None, None].expand_as(out), atol=1e-6)


def test_decode_keeps_channels_apart() -> None:
    stored = torch.stack([torch.zeros(6, 6), torch.ones(6, 6), torch.full((6, 6), 2.0)])[None]
    out = decode(stored, 3)
    assert out.shape == (9, 3, 6, 6)
    for c in range(3):
        assert torch.allclose(out[:, c], torch.full((9, 6, 6), float(c)))


@pytest.mark.parametrize("factor", [2, 3])
def test_encode_constant_images_round_trips_exactly(factor: int) -> None:
    values = torch.randn(2 * factor * factor)
    images = values[:, None, None, None].expand(-1, 1, 12, 12).contiguous()
    stored = encode(images, factor)
    assert stored.shape == (2, 1, 12, 12)
    assert torch.allclose(decode(stored, factor), images, atol=1e-5)


@pytest.mark.parametrize("factor", [2, 4])
def test_encode_then_decode_roughly_preserves_smooth_images(factor: int) -> None:
    n, size = factor**2, 32
    u = torch.linspace(0, 1, size)
    yy, xx = torch.meshgrid(u, u, indexing="ij")
    angles = torch.linspace(0, math.pi, n)
    smooth = torch.stack([torch.sin(math.pi * (a.cos() * xx + a.sin() * yy) + a) for a in angles])
    smooth = smooth[:, None]  # (f², 1, 32, 32), low frequency
    back = decode(encode(smooth, factor), factor)
    assert back.shape == smooth.shape
    rel = float((back - smooth).norm() / smooth.norm())
    noise = torch.randn(n, 1, size, size, generator=torch.Generator().manual_seed(0))
    rel_noise = float((decode(encode(noise, factor), factor) - noise).norm() / noise.norm())
    assert rel < 0.1  # lossy, but close for smooth images (2: 0.02, 4: 0.06)
    assert rel_noise > 0.5  # while detail is lost (the check above is not vacuous)


def test_encode_rejects_incomplete_groups() -> None:
    with pytest.raises(ValueError, match="groups of 4"):
        encode(torch.zeros(3, 1, 8, 8), 2)


def test_check_factor() -> None:
    for f in (1, 2, 4, 8):
        check_factor(f, (8, 8))
    check_factor(3, (12, 6))
    for f, size in [(3, (8, 8)), (0, (8, 8)), (2, (8, 7)), (16, (8, 8))]:
        with pytest.raises(ConfigError, match=f"factor: {f} does not divide"):
            check_factor(f, size)


# ----------------------------------------------------------------------------- construction
def test_sample_real_distinct_and_seeded(digits) -> None:
    a = sample_real(digits, 5, torch.Generator().manual_seed(0))
    b = sample_real(digits, 5, torch.Generator().manual_seed(0))
    c = sample_real(digits, 5, torch.Generator().manual_seed(1))
    assert len(a) == digits.num_classes
    for cls, idx in enumerate(a):
        assert len(idx) == 5 and len(set(idx.tolist())) == 5
        assert (digits.train.labels[idx] == cls).all()
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a, c, strict=True))


def test_sample_real_too_few_images_names_the_class() -> None:
    ds = tiny_dataset((6, 3, 6))
    sample_real(ds, 3, torch.Generator().manual_seed(0))
    with pytest.raises(DataError, match=r"tiny: class 'c1' has 3 train images, fewer than the 4"):
        sample_real(ds, 4, torch.Generator().manual_seed(0))


def test_from_real_factor_one_keeps_the_pixels(digits) -> None:
    idx = sample_real(digits, 2, torch.Generator().manual_seed(0))
    syn = SyntheticSet.from_real(digits, idx)
    assert syn.images.shape == (20, 1, 8, 8)
    assert syn.labels.tolist() == [c for c in range(10) for _ in range(2)]
    assert (syn.ipc, syn.num_classes, syn.factor) == (2, 10, 1)
    assert torch.equal(syn.segments, torch.zeros(20, dtype=torch.long))
    pixels = torch.from_numpy(syn.to_uint8()).permute(0, 3, 1, 2)
    assert torch.equal(pixels, digits.train.images[torch.cat(idx)])  # normalise → uint8 exact
    assert syn.dataset == digits.meta()


def test_from_real_with_factor_packs_groups(digits) -> None:
    idx = sample_real(digits, 3 * 4, torch.Generator().manual_seed(0))  # 3 stored per class
    syn = SyntheticSet.from_real(digits, idx, factor=2)
    assert syn.images.shape == (30, 1, 8, 8)
    assert syn.labels.tolist() == [c for c in range(10) for _ in range(3)]
    assert syn.ipc == 3
    images, labels = syn.decoded()
    assert images.shape == (120, 1, 8, 8)
    assert labels.tolist() == [c for c in range(10) for _ in range(12)]
    # tile (0, 0) of stored image 0 is the 2× downsampled first real image of class 0
    first = digits.normalize(digits.train.images[idx[0][:1]])
    small = torch.nn.functional.interpolate(first, size=(4, 4), mode="bilinear", antialias=True)
    assert torch.allclose(syn.images[0, :, :4, :4], small[0], atol=1e-5)
    with pytest.raises(ValueError, match="groups of 4"):
        SyntheticSet.from_real(digits, [i[:3] for i in idx], factor=2)
    with pytest.raises(ConfigError, match="factor: 3"):
        SyntheticSet.from_real(digits, idx, factor=3)


def test_from_noise_and_subset(digits) -> None:
    a = SyntheticSet.from_noise(digits, 2, torch.Generator().manual_seed(0), factor=2)
    b = SyntheticSet.from_noise(digits, 2, torch.Generator().manual_seed(0), factor=2)
    assert a.images.shape == (20, 1, 8, 8) and torch.equal(a.images, b.images)
    assert a.decoded()[0].shape == (80, 1, 8, 8)
    sub = a.subset(a.labels < 3)
    assert sub.labels.tolist() == [0, 0, 1, 1, 2, 2] and sub.factor == 2
    assert sub.num_classes == 10  # from the dataset's class names, not the labels present


# ----------------------------------------------------------------------------- persistence
def saved_set(digits, tmp_path: Path) -> tuple[SyntheticSet, Path]:
    syn = SyntheticSet.from_noise(digits, 3, torch.Generator().manual_seed(0), factor=2)
    syn.segments = torch.tensor([0, 1, 1] * 10)
    syn.step_size = torch.tensor([0.0123])
    syn.info = {"method": "edd", "seeds": [1, 2], "config": {"lr": 0.1}}
    return syn, syn.save(tmp_path / "syn")


def test_save_load_round_trip_bitwise(digits, tmp_path: Path, monkeypatch) -> None:
    syn, directory = saved_set(digits, tmp_path)
    assert sorted(p.name for p in directory.iterdir()) == [SIDECAR_FILE, TENSORS_FILE]

    def no_pickle(*args, **kwargs):
        raise AssertionError("loading a synthetic set must not unpickle anything")

    monkeypatch.setattr(pickle, "load", no_pickle)
    monkeypatch.setattr(pickle, "loads", no_pickle)
    monkeypatch.setattr(torch, "load", no_pickle)
    back = SyntheticSet.load(directory)
    assert torch.equal(back.images, syn.images) and back.images.dtype == torch.float32
    assert torch.equal(back.labels, syn.labels) and back.labels.dtype == torch.long
    assert torch.equal(back.segments, syn.segments)
    assert torch.equal(back.step_size, syn.step_size)
    assert back.factor == 2 and back.ipc == 3
    assert back.dataset == digits.meta()
    assert back.info["method"] == "edd" and back.info["seeds"] == [1, 2]
    assert back.info["config"] == {"lr": 0.1}
    assert back.info["library_version"] == __version__

    sidecar = json.loads((directory / SIDECAR_FILE).read_text())
    assert sidecar["factor"] == 2 and sidecar["ipc"] == 3 and sidecar["num_images"] == 30
    assert sidecar["dataset"]["name"] == "digits" and sidecar["format_version"] == 1
    # safetensors layout: 8-byte little-endian header length, then a JSON header
    raw = (directory / TENSORS_FILE).read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    assert set(json.loads(raw[8 : 8 + header_len])) >= {"images", "labels", "segments"}


def test_load_without_optional_tensors(digits, tmp_path: Path) -> None:
    syn = SyntheticSet.from_noise(digits, 1, torch.Generator().manual_seed(0))
    syn.save(tmp_path)
    back = SyntheticSet.load(tmp_path)
    assert back.step_size is None and torch.equal(back.segments, torch.zeros(10, dtype=torch.long))


@pytest.mark.parametrize("missing", [TENSORS_FILE, SIDECAR_FILE])
def test_load_missing_file(digits, tmp_path: Path, missing: str) -> None:
    _, directory = saved_set(digits, tmp_path)
    (directory / missing).unlink()
    with pytest.raises(DataError, match=f"{missing}: not found"):
        SyntheticSet.load(directory)
    with pytest.raises(DataError, match="not found"):
        SyntheticSet.load(tmp_path / "nowhere")


def test_load_truncated_safetensors(digits, tmp_path: Path) -> None:
    _, directory = saved_set(digits, tmp_path)
    path = directory / TENSORS_FILE
    data = path.read_bytes()
    for cut in (len(data) - 7, 20, 4, 0):
        path.write_bytes(data[:cut])
        with pytest.raises(DataError, match="not a readable safetensors file"):
            SyntheticSet.load(directory)


def test_load_invalid_json_sidecar(digits, tmp_path: Path) -> None:
    _, directory = saved_set(digits, tmp_path)
    (directory / SIDECAR_FILE).write_text('{"factor": 2,')
    with pytest.raises(DataError, match=f"{SIDECAR_FILE}: not valid JSON"):
        SyntheticSet.load(directory)
    (directory / SIDECAR_FILE).write_bytes(b"\xff\xfe\x00")
    with pytest.raises(DataError, match="not valid JSON"):
        SyntheticSet.load(directory)


@pytest.mark.parametrize(
    "tensors",
    [
        {"images": torch.zeros(3, 1, 8, 8), "labels": torch.zeros(2, dtype=torch.long)},
        {"images": torch.zeros(3, 8, 8), "labels": torch.zeros(3, dtype=torch.long)},
        {"images": torch.zeros(3, 1, 8, 8), "labels": torch.zeros(3, 1, dtype=torch.long)},
        {"images": torch.zeros(3, 1, 8, 8)},
    ],
    ids=["count", "images-ndim", "labels-ndim", "no-labels"],
)
def test_load_mismatched_tensors(digits, tmp_path: Path, tensors) -> None:
    _, directory = saved_set(digits, tmp_path)
    save_file(tensors, str(directory / TENSORS_FILE))
    with pytest.raises(DataError, match=TENSORS_FILE):
        SyntheticSet.load(directory)


def test_load_rejects_inconsistent_contents(digits, tmp_path: Path) -> None:
    syn, directory = saved_set(digits, tmp_path)
    sidecar = directory / SIDECAR_FILE
    good = sidecar.read_text()
    sidecar.write_text("[1, 2]")
    with pytest.raises(DataError, match="expected a JSON object"):
        SyntheticSet.load(directory)
    sidecar.write_text(good.replace('"factor": 2', '"factor": 3'))
    with pytest.raises(DataError, match="factor 3 does not divide"):
        SyntheticSet.load(directory)
    sidecar.write_text(good)
    tensors = {"images": syn.images, "labels": syn.labels, "segments": syn.segments[:-1]}
    save_file(tensors, str(directory / TENSORS_FILE))
    with pytest.raises(DataError, match="segments"):
        SyntheticSet.load(directory)
    for bad in (10, -1):  # digits has classes 0..9
        labels = syn.labels.clone()
        labels[0] = bad
        save_file({"images": syn.images, "labels": labels}, str(directory / TENSORS_FILE))
        with pytest.raises(DataError, match="labels out of range"):
            SyntheticSet.load(directory)


# ----------------------------------------------------------------------------- pictures
def test_grid_png_size(digits, tmp_path: Path) -> None:
    syn = SyntheticSet.from_real(digits, sample_real(digits, 3, torch.Generator().manual_seed(0)))
    path = syn.grid(tmp_path / "g" / "grid.png", scale=2)
    assert path.is_file()
    with Image.open(path) as im:
        # one row per class, ipc images per row, 1-pixel padding, then ×scale
        assert im.size == ((3 * 9 + 1) * 2, (10 * 9 + 1) * 2)
        assert im.mode == "L"
        arr = np.asarray(im)
    # row of class 0, first image: the top-left pixel of the real image, scaled
    first = syn.to_uint8()[0, 0, 0, 0]
    assert arr[2, 2] == first
    with Image.open(syn.grid(tmp_path / "default.png")) as im:  # default scale 256//8//2 = 16
        assert im.size == ((3 * 9 + 1) * 16, (10 * 9 + 1) * 16)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_grid_rgb(tmp_path: Path) -> None:
    ds = tiny_dataset((4, 4), size=8, channels=3)
    syn = SyntheticSet.from_real(ds, sample_real(ds, 2, torch.Generator().manual_seed(0)))
    with Image.open(syn.grid(tmp_path / "grid.png", scale=1)) as im:
        assert im.mode == "RGB" and im.size == (2 * 9 + 1, 2 * 9 + 1)


@pytest.mark.parametrize("factor", [1, 2])
def test_export_imagefolder_writes_ipc_f2_pngs_per_class(digits, tmp_path: Path, factor) -> None:
    ipc = 2
    idx = sample_real(digits, ipc * factor**2, torch.Generator().manual_seed(0))
    syn = SyntheticSet.from_real(digits, idx, factor)
    out = syn.export_imagefolder(tmp_path / "export")
    folders = sorted((out / "train").iterdir())
    assert [f.name for f in folders] == digits.class_names
    for folder in folders:
        files = sorted(p.name for p in folder.iterdir())
        assert files == [f"{k:04d}.png" for k in range(ipc * factor**2)]
        with Image.open(folder / files[0]) as im:
            assert im.size == (8, 8) and im.mode == "L"
    if factor == 1:  # undecoded images are exported pixel for pixel
        with Image.open(out / "train" / "0" / "0000.png") as im:
            assert np.array_equal(np.asarray(im), digits.train.images[idx[0][0], 0].numpy())


def test_export_uses_safe_class_names(tmp_path: Path) -> None:
    ds = tiny_dataset((2, 2))
    ds.class_names = ["a/b", ".."]  # ".." must not escape the export directory
    syn = SyntheticSet.from_real(ds, sample_real(ds, 1, torch.Generator().manual_seed(0)))
    syn.export_imagefolder(tmp_path / "export")
    assert sorted(p.name for p in (tmp_path / "export" / "train").iterdir()) == ["__", "a_b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]
