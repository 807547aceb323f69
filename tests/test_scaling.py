"""Speed and scale (DESIGN.md §5): automatic class chunks, chunk-invariant results, the fast-path
options on CPU, and the scaling benchmark's own code path on a tiny case."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from exdistill.data import load_dataset
from exdistill.errors import ConfigError
from exdistill.methods import METHODS, DistillContext, resolve_config
from exdistill.methods import gradient as gradient_module
from exdistill.methods.gradient import GradientMatching
from exdistill.methods.matching import (
    DISTANCES,
    LAYERS,
    ClassBatch,
    ForwardOptions,
    available_bytes,
    class_gradients,
    match_and_backward,
    resolve_class_chunk,
    term_bytes,
)
from exdistill.methods.segment import initial_indices
from exdistill.models import build_model
from exdistill.seeding import generator
from exdistill.synthetic import SyntheticSet

GiB, MiB = 1 << 30, 1 << 20
TINY = {"iterations": 2, "match_steps": 2, "model_options": {"width": 16}}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


# ----------------------------------------------------------------------------- the resolver
def test_explicit_chunks_are_kept():
    assert resolve_class_chunk(0, 200, 10 * GiB, 1 * GiB) == 0
    assert resolve_class_chunk(7, 200, 10 * GiB, 1 * GiB) == 7


def test_auto_is_all_at_once_when_every_class_fits():
    # 10 classes × 20 MiB = 200 MiB ≤ a fifth of 1 GiB
    assert resolve_class_chunk(-1, 10, 20 * MiB, 1 * GiB) == 0
    assert resolve_class_chunk(-1, 10, 20 * MiB, 1000 * MiB) == 0  # exactly the budget
    assert resolve_class_chunk(-1, 10, 20 * MiB, 400 * MiB, fraction=0.5) == 0


def test_auto_takes_the_largest_chunk_that_fits():
    assert resolve_class_chunk(-1, 200, 300 * MiB, 16 * GiB) == 10  # 3.2 GiB // 300 MiB
    assert resolve_class_chunk(-1, 10, 20 * MiB, 999 * MiB) == 9
    assert resolve_class_chunk(-1, 200, 300 * MiB, 16 * GiB, fraction=0.5) == 27


def test_auto_never_goes_below_one_class_and_falls_back_when_unknown():
    assert resolve_class_chunk(-1, 200, 10 * GiB, 1 * GiB) == 1
    assert resolve_class_chunk(-1, 200, 10 * GiB, None) == 0  # unknown memory: as before
    assert resolve_class_chunk(-1, 200, 0, 1 * GiB) == 0


def test_available_memory_on_cpu_reads_meminfo(tmp_path: Path, monkeypatch):
    info = tmp_path / "meminfo"
    info.write_text("MemTotal:       24000000 kB\nMemAvailable:    1234567 kB\n")
    assert available_bytes(torch.device("cpu"), str(info)) == 1234567 * 1024
    monkeypatch.setitem(sys.modules, "psutil", None)  # no /proc and no psutil: unknown
    assert available_bytes(torch.device("cpu"), str(tmp_path / "missing")) is None
    assert available_bytes(torch.device("meta")) is None


def test_measured_term_memory_grows_with_the_synthetic_batch():
    net = build_model("convnet", 1, 4, (8, 8), generator=torch.Generator().manual_seed(0), width=8)
    params = LAYERS.get("conv")(net)
    real = torch.zeros(2, 1, 8, 8)
    sizes = [
        term_bytes(net, params, DISTANCES.get("l1"), real, torch.zeros(n, 1, 8, 8))
        for n in (2, 4, 16)
    ]
    assert 0 < sizes[0] < sizes[1] < sizes[2]
    assert sizes[2] > 2 * sizes[0]  # activations dominate the parameter-sized constants


# ----------------------------------------------------------------------------- chunk invariance
def _run(name, digits, ipc=2, **overrides):
    cfg = resolve_config(name, "quick", "digits", ipc, overrides)
    return METHODS.get(name).run(DistillContext(digits, ipc, 0), cfg).synthetic.images


@pytest.mark.parametrize("chunk", [1, 3, -1])
def test_the_chunk_size_never_changes_the_result(digits, chunk):
    """All draws of a step come first, so chunks only split the backward (exact sums)."""
    over = {**TINY, "factor": 2, "max_syn_per_class": 4}  # siamese augmentation + subsample
    assert torch.equal(_run("idc", digits, **over, class_chunk=chunk), _run("idc", digits, **over))


def test_the_chunk_size_never_changes_edd_with_its_regulariser(digits):
    """The regulariser's union terms decode each chunk's earlier segments when it is computed;
    with factor 2 and a subsample smaller than the union, counts and draws must line up."""
    edd = {"segments": (1, 1), "filter": {"epochs": 2, "max_steps": 5}}
    base = {**TINY, "factor": 2, "max_syn_per_class": 6}  # union: 4 + 4 decoded, keep 6
    one = _run("edd", digits, **edd, base_config={**base, "class_chunk": 1})
    all_ = _run("edd", digits, **edd, base_config={**base, "class_chunk": 0})
    assert torch.equal(one, all_)


def test_auto_resolves_to_all_at_once_on_digits_and_to_chunks_when_memory_is_short(
    digits, monkeypatch
):
    cfg = resolve_config("idc", "quick", "digits", 2, TINY)
    assert cfg.class_chunk == -1  # the default is auto
    ctx = DistillContext(digits, 2, 0)
    start = SyntheticSet.from_real(digits, initial_indices(ctx, 2, cfg.factor), cfg.factor)

    def distill():
        matcher = GradientMatching(cfg, ctx)
        out = matcher.distill_segment(
            start.images, start.labels, matcher.full_pool, 2, 2, generator(0, "distill")
        )
        return out, matcher.last_class_chunk

    everything, chunk = distill()
    assert chunk == 0
    # Pretend only 200 kB are free: the resolver picks small chunks; the result is the same.
    monkeypatch.setattr(gradient_module, "available_bytes", lambda device: 200_000)
    chunked, chunk = distill()
    assert 1 <= chunk < 10
    assert torch.equal(chunked, everything)


def test_unsynced_loss_is_the_same_value_on_the_device():
    g = torch.Generator().manual_seed(0)
    net = build_model("convnet", 1, 3, (8, 8), generator=g, width=8)
    params = LAYERS.get("conv")(net)
    real, syn = torch.randn(3, 4, 1, 8, 8, generator=g), torch.randn(3, 2, 1, 8, 8, generator=g)
    batches = lambda chunk: [ClassBatch(c, real[c], syn[c]) for c in chunk]  # noqa: E731
    dist = DISTANCES.get("mse")
    value = match_and_backward(net, params, dist, batches, range(3), None, g, 2)
    tensor = match_and_backward(net, params, dist, batches, range(3), None, g, 2, sync=False)
    assert isinstance(tensor, torch.Tensor) and tensor.dtype == torch.float64
    assert float(tensor) == value
    empty = match_and_backward(net, params, dist, batches, [], None, g, sync=False)
    assert float(empty) == 0.0


# ----------------------------------------------------------------------------- fast path on CPU
@pytest.mark.parametrize("method", ["dc", "dsa", "idc", "edd"])
@pytest.mark.parametrize("preset", ["quick", "paper"])
def test_the_gpu_fast_path_options_are_off_unless_asked_for(method, preset):
    cfg = resolve_config(method, preset, "digits", 10)
    matcher = cfg.resolved_base if method == "edd" else cfg
    options = {k: getattr(matcher, k) for k in ("channels_last", "autocast_bf16", "compile")}
    assert options == {"channels_last": False, "autocast_bf16": False, "compile": False}


def test_bf16_autocast_is_refused_on_cpu_before_any_write(digits, tmp_path: Path):
    cfg = resolve_config("idc", "quick", "digits", 1, {**TINY, "autocast_bf16": True})
    with pytest.raises(ConfigError, match="autocast_bf16: needs a CUDA device"):
        GradientMatching(cfg, DistillContext(digits, 1))
    from exdistill.pipeline import RunConfig, distill

    run = RunConfig(method="edd", ipc=2, baselines=False, repeats=1)
    with pytest.raises(ConfigError, match="autocast_bf16"):
        distill(run, {"base_config": {"autocast_bf16": True}}, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_channels_last_matches_the_default_to_rounding(digits):
    plain = _run("idc", digits, **TINY)
    nhwc = _run("idc", digits, **TINY, channels_last=True)
    torch.testing.assert_close(nhwc, plain, rtol=1e-4, atol=1e-4)


def test_first_order_passes_use_the_second_module():
    net = build_model("convnet", 1, 3, (8, 8), generator=torch.Generator().manual_seed(0), width=8)
    calls = []

    class Spy(torch.nn.Module):
        def forward(self, x):
            calls.append(x.shape[0])
            return net(x)

    fwd = ForwardOptions(first_order=Spy())
    params = LAYERS.get("conv")(net)
    x = torch.randn(5, 1, 8, 8, requires_grad=True)
    class_gradients(net, params, x, 1, create_graph=True, forward=fwd)
    assert calls == []  # the double-backward pass stays eager
    class_gradients(net, params, x.detach(), 1, create_graph=False, forward=fwd)
    assert calls == [5]


@pytest.mark.slow
def test_compiled_first_order_passes_match_eager(digits):
    """torch.compile on CPU needs a C compiler and ~10-40 s; results agree to rounding."""
    plain = _run("idc", digits, **TINY)
    compiled = _run("idc", digits, **TINY, compile=True)
    torch.testing.assert_close(compiled, plain, rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------- the benchmark
def test_scaling_benchmark_runs_one_outer_iteration_of_a_tiny_case(monkeypatch):
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "scaling.py"
    spec = importlib.util.spec_from_file_location("scaling_bench", path)
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, bench)  # dataclasses look their module up
    spec.loader.exec_module(bench)
    monkeypatch.setitem(bench.CASES, "mini", bench.Shape(3, 16))
    budget = bench.Budget(ipc=2, width=8, batch_real=4, real_per_class=12, match_steps=1)
    for method in ("idc", "edd"):
        r = bench.one_iteration("mini", method, budget, "cpu")
        assert r["classes"] == 3 and r["seconds"] > 0 and r["peak_rss_gib"] > 0
        assert r["class_chunk"] == 0
    assert r["segment_ipc"] == 1 and r["frozen_ipc"] == 1  # EDD: the last of segments (1, 1)
    ds = bench.random_dataset(bench.Shape(4, 8), 5)
    assert ds.train.images.shape == (20, 3, 8, 8) and ds.train.images.dtype == torch.uint8
    assert [len(i) for i in ds.class_indices("train")] == [5] * 4


def test_scaling_benchmark_reads_real_tiny_imagenet_classes(tmp_path, monkeypatch):
    """``--tiny-data``: the tiny* cases take the first classes of a parquet dataset, real pixels."""
    import io
    import json

    import numpy as np
    from PIL import Image

    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    monkeypatch.setenv("EXDISTILL_CACHE", str(tmp_path / "cache"))
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "scaling.py"
    spec = importlib.util.spec_from_file_location("scaling_bench_real", path)
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, bench)
    spec.loader.exec_module(bench)
    monkeypatch.setitem(bench.CASES, "tinymini", bench.Shape(2, 16))
    rng = np.random.default_rng(0)

    def shard(name: str, labels: list[int]) -> None:
        blobs = []
        for _ in labels:
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(buf, "PNG")
            blobs.append({"bytes": buf.getvalue(), "path": "x.png"})
        image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
        table = pa.table({"image": pa.array(blobs, image_type), "label": pa.array(labels)})
        feats = {"label": {"names": ["a", "b", "c"], "_type": "ClassLabel"}}
        table = table.replace_schema_metadata(
            {"huggingface": json.dumps({"info": {"features": feats}})}
        )
        (tmp_path / "tiny" / "data").mkdir(parents=True, exist_ok=True)
        pq.write_table(table, tmp_path / "tiny" / "data" / f"{name}-00000-of-00001.parquet")

    shard("train", [i % 3 for i in range(60)])  # 20 per class; the validation tenth leaves 18
    shard("valid", [0, 1, 2])
    ds = bench.real_dataset(str(tmp_path / "tiny"), bench.Shape(2, 16), per_class=10)
    assert ds.num_classes == 2 and ds.class_names == ["a", "b"]
    assert [len(i) for i in ds.class_indices("train")] == [10, 10]
    assert ds.train.images.float().std() > 50  # the PNGs' random pixels, not zeros
    budget = bench.Budget(ipc=2, width=8, batch_real=4, real_per_class=30, match_steps=1)
    r = bench.one_iteration("tinymini", "edd", budget, "cpu", tiny_data=str(tmp_path / "tiny"))
    assert r["real_per_class"] == 18 and "first 2 classes" in r["data"] and r["seconds"] > 0
    with pytest.raises(SystemExit, match="holds 3 classes"):
        bench.real_dataset(str(tmp_path / "tiny"), bench.Shape(5, 16), per_class=10)
