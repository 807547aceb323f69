"""Precision: detection, resolution, the bf16 scope every loop honours, and what stays fp32."""

import json

import pytest
import torch

from exdistill.baselines import cache_path
from exdistill.data import load_dataset
from exdistill.errors import ConfigError
from exdistill.evaluation import PROTOCOLS
from exdistill.methods.dm import embedding_distance
from exdistill.models import build_model
from exdistill.pipeline import RunConfig, distill
from exdistill.precision import autocast_scope, cpu_bf16_flags, resolve_precision

TINY = {"iterations": 2, "match_steps": 2, "model_options": {"width": 8}}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_cpu_flags_are_read_not_assumed(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx2\n")
    assert cpu_bf16_flags(info) == ()
    info.write_text("flags\t\t: fpu avx512f avx512_bf16\nflags\t\t: amx_bf16\n")
    assert cpu_bf16_flags(info) == ("amx_bf16", "avx512_bf16")
    assert cpu_bf16_flags(tmp_path / "missing") == ()


def test_auto_is_bf16_only_where_it_is_fast():
    assert resolve_precision("auto", "cpu", cpu_flags=("avx512_bf16",)) == "bf16"
    assert resolve_precision("auto", "cpu", cpu_flags=()) == "fp32"
    assert resolve_precision("fp32", "cpu", cpu_flags=("amx_bf16",)) == "fp32"
    with pytest.raises(ConfigError, match="precision: unknown 'fp16'"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(ConfigError, match="precision"):
        RunConfig(precision="half").validate()


def test_auto_keeps_fp32_on_small_images_where_casts_cost_more():
    amx = ("amx_bf16",)
    assert resolve_precision("auto", "cpu", amx, image_size=(8, 8)) == "fp32"  # digits
    assert resolve_precision("auto", "cpu", amx, image_size=(28, 28)) == "bf16"  # Fashion-MNIST
    assert resolve_precision("auto", "cpu", amx, image_size=(27, 28)) == "fp32"  # below the floor
    assert resolve_precision("auto", "cpu", amx, image_size=(32, 32)) == "bf16"  # CIFAR-10
    assert resolve_precision("bf16", "cpu", (), image_size=(8, 8)) == "bf16"  # asked: obeyed
    assert RunConfig().precision == "auto"


@pytest.mark.parametrize("command", ["baseline", "evaluate"])
def test_baseline_and_evaluate_take_a_precision_and_record_it(command, digits, tmp_path):
    from exdistill.pipeline import evaluate_dir, run_baseline

    if command == "baseline":
        m = run_baseline(
            "random",
            "digits",
            None,
            2,
            "dc-quick",
            1,
            0,
            tmp_path / "b",
            None,
            "cpu",
            use_cache=False,
            precision="bf16",
        )
    else:
        run = RunConfig(method="random", ipc=2, repeats=1, baselines=False, protocol="dc-quick")
        distill(run, {}, tmp_path / "run")
        m = evaluate_dir(
            tmp_path / "run" / "synthetic",
            tmp_path / "e",
            "dc-quick",
            1,
            0,
            ["convnet"],
            None,
            "cpu",
            precision="bf16",
        )
    assert (m["precision"], m["precision_requested"]) == ("bf16", "bf16")
    assert 0.3 < m["test_acc_mean"] <= 1.0
    with pytest.raises(ConfigError, match="precision: unknown"):
        run_baseline(
            "random",
            "digits",
            None,
            2,
            "dc-quick",
            1,
            0,
            tmp_path / "x",
            None,
            "cpu",
            precision="fp16",
        )


def test_the_bf16_scope_runs_convolutions_in_bf16_and_keeps_parameters_fp32(digits):
    net = build_model("convnet", 1, 10, (8, 8), generator=torch.Generator().manual_seed(0))
    x = torch.randn(4, 1, 8, 8)
    with autocast_scope("bf16", "cpu"):
        out = net(x)
        loss = torch.nn.functional.cross_entropy(out, torch.zeros(4, dtype=torch.long))
    assert out.dtype == torch.bfloat16 and loss.dtype == torch.float32
    loss.backward()
    assert all(p.grad.dtype == torch.float32 for p in net.parameters())
    with autocast_scope("fp32", "cpu"):
        assert net(x).dtype == torch.float32


def test_the_bf16_scope_sees_every_update_of_the_weights():
    """One scope spans whole training loops: a forward after an optimizer step must use the new
    weights (autocast's weight cache would keep the first bf16 copy until the scope exits)."""
    net = build_model("convnet", 1, 10, (8, 8), generator=torch.Generator().manual_seed(0))
    x = torch.randn(4, 1, 8, 8)
    with autocast_scope("bf16", "cpu"):
        before = net(x)
        with torch.no_grad():
            net.classifier.weight.zero_()
            net.classifier.bias.fill_(1.0)
        after = net(x)
    assert not torch.equal(before, after)
    assert torch.equal(after, torch.ones_like(after))


def test_a_network_trained_under_bf16_learns_as_in_fp32(digits):
    from dataclasses import replace

    from exdistill.train import train_classifier

    recipe = replace(PROTOCOLS.get("idc-smoke").train, epochs=30, max_steps=150, augment="")
    x, y = digits.normalize(digits.train.images[:400]), digits.train.labels[:400]
    tx, ty = digits.normalize(digits.test.images), digits.test.labels
    accs = {}
    for precision in ("fp32", "bf16"):
        net = build_model("convnet", 1, 10, (8, 8), generator=torch.Generator().manual_seed(0))
        with autocast_scope(precision, "cpu"):
            train_classifier(net, x, y, recipe, torch.Generator().manual_seed(1))
        with torch.no_grad():
            accs[precision] = (net.eval()(tx).argmax(1) == ty).float().mean().item()
    assert accs["fp32"] > 0.8, accs
    assert accs["bf16"] > accs["fp32"] - 0.05, accs


def test_dm_distance_stays_fp32_under_bf16(digits):
    net = build_model("convnet", 1, 10, (8, 8), generator=torch.Generator().manual_seed(0))
    real, syn = torch.randn(6, 1, 8, 8), torch.randn(2, 1, 8, 8, requires_grad=True)
    with autocast_scope("bf16", "cpu"):
        d = embedding_distance(net, real, syn, None, torch.Generator())
    assert d.dtype == torch.float32
    d.backward()
    assert syn.grad.dtype == torch.float32 and torch.isfinite(syn.grad).all()


def test_bf16_baselines_never_share_the_fp32_cache(digits, tmp_path):
    proto = PROTOCOLS.get("idc-smoke")
    fp32 = cache_path(tmp_path, "random", digits, 2, proto, "convnet", 1, 0)
    assert fp32 == cache_path(tmp_path, "random", digits, 2, proto, "convnet", 1, 0, "fp32")
    assert fp32 != cache_path(tmp_path, "random", digits, 2, proto, "convnet", 1, 0, "bf16")


def test_a_bf16_run_records_its_precision_and_stays_near_fp32(digits, tmp_path):
    def run(precision):
        cfg = RunConfig(method="idc", ipc=2, repeats=1, protocol="idc-smoke", precision=precision)
        out = distill(cfg, TINY, tmp_path / precision)
        return out.synthetic.images, json.loads((tmp_path / precision / "metrics.json").read_text())

    images32, m32 = run("fp32")
    images16, m16 = run("bf16")
    assert (m32["precision"], m16["precision"], m16["precision_requested"]) == ("fp32",) + (
        "bf16",
    ) * 2
    assert set(m16["cpu_bf16"]) <= {"amx_bf16", "avx512_bf16"}
    assert not torch.equal(images16, images32) and torch.isfinite(images16).all()
    # 4 image updates from the same start: the two sets stay close.
    assert (images16 - images32).abs().max() < 0.25 * images32.abs().max()


def test_auto_records_what_it_chose_so_a_resume_elsewhere_is_refused(digits, tmp_path):
    import yaml

    from exdistill.errors import ConfigError

    cfg = RunConfig(method="idc", ipc=2, repeats=1, protocol="idc-smoke", precision="auto")
    distill(cfg, TINY, tmp_path / "run")
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["precision_resolved"] == resolve_precision("auto", "cpu", image_size=(8, 8))
    other = {"fp32": "bf16", "bf16": "fp32"}[saved["precision_resolved"]]
    saved["precision_resolved"] = other  # as if it had started on another kind of machine
    (tmp_path / "run" / "config.yaml").write_text(yaml.safe_dump(saved))
    (tmp_path / "run" / "run.json").write_text(json.dumps({"status": "running"}))
    with pytest.raises(ConfigError, match="config differs"):
        distill(cfg, TINY, tmp_path / "run", resume=True)
