"""MTT: the trajectory loss, the learned step size, checks against the experts, end to end."""

import dataclasses
import json
import shutil

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from exdistill.api import eval_protocol
from exdistill.checkpoint import Checkpointer
from exdistill.cli import main
from exdistill.config import config_hash, to_dict
from exdistill.data import load_dataset
from exdistill.errors import ConfigError, DataError, NumericalError
from exdistill.evaluation import Protocol
from exdistill.experts import ExpertSet, resolve_expert_config, train_experts
from exdistill.methods import METHODS, DistillContext, resolve_config
from exdistill.methods.mtt import trajectory_loss
from exdistill.pipeline import RunConfig, distill
from exdistill.synthetic import SyntheticSet

EXPERTS = {
    "num_experts": 2,
    "train": {"epochs": 3, "batch_size": 256},
    "model_options": {"width": 8},
}
# Matches EXPERTS: width 8, and start + target epochs within the 3 trained ones.
TINY = {
    "model_options": {"width": 8},
    "iterations": 3,
    "syn_steps": 2,
    "expert_epochs": 1,
    "max_start_epoch": 2,
    "checkpoint_every": 1,
}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def experts_dir(digits, tmp_path_factory):
    out = tmp_path_factory.mktemp("mtt") / "experts"
    train_experts(digits, resolve_expert_config("quick", "digits", overrides=EXPERTS), out)
    return out


def _cfg(experts_dir, ipc=1, **overrides):
    return resolve_config(
        "mtt", "quick", "digits", ipc, {**TINY, "experts": str(experts_dir), **overrides}
    )


def _run(digits, cfg, ipc=1, seed=0, **ctx):
    return METHODS.get("mtt").run(DistillContext(digits, ipc, seed, **ctx), cfg)


def _linear_start_target(seed=0):
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    start = {"1.weight": torch.randn(10, 64, generator=g) * 0.1, "1.bias": torch.zeros(10)}
    target = {k: v + 0.05 * torch.randn(v.shape, generator=g) for k, v in start.items()}
    return net, start, target


# ----------------------------------------------------------------------------- the loss
def test_zero_student_steps_give_loss_exactly_one(experts_dir):
    experts = ExpertSet(experts_dir)
    net = nn.Linear(1, 1)  # never called: zero steps
    images = torch.randn(10, 1, 8, 8, requires_grad=True)
    step = torch.tensor(0.01, requires_grad=True)
    loss = trajectory_loss(
        net,
        experts.parameters(0, 0),
        experts.parameters(0, 2),
        images,
        torch.arange(10),
        step,
        0,
        0,
        torch.Generator(),
    )
    assert loss.item() == 1.0


def test_step_size_and_images_receive_gradients(digits, experts_dir):
    experts = ExpertSet(experts_dir)
    from exdistill.models import build_model

    net = build_model("convnet", 1, 10, (8, 8), width=8)
    images = torch.randn(20, 1, 8, 8, requires_grad=True)
    step = torch.tensor(0.01, requires_grad=True)
    loss = trajectory_loss(
        net,
        experts.parameters(0, 0),
        experts.parameters(0, 1),
        images,
        torch.arange(10).repeat(2),
        step,
        3,
        0,
        torch.Generator().manual_seed(0),
    )
    loss.backward()
    assert torch.isfinite(step.grad) and step.grad.abs() > 0
    assert images.grad is not None and images.grad.abs().sum() > 0
    assert 0 < loss.item() < 10


def _reference_loss(start, target, images, labels, alpha, order):
    """Softmax regression by hand: ∇W = (softmax(XWᵀ + b) − Y)ᵀ X / B, no autograd."""
    w, b = start["1.weight"].clone(), start["1.bias"].clone()
    x_all = images.reshape(images.shape[0], -1)
    for idx in order:
        x, y = x_all[idx], F.one_hot(labels[idx], 10).float()
        err = (torch.softmax(x @ w.T + b, dim=1) - y) / len(idx)  # (B, 10)
        w, b = w - alpha * err.T @ x, b - alpha * err.sum(0)
    moved = ((w - target["1.weight"]) ** 2).sum() + ((b - target["1.bias"]) ** 2).sum()
    span = sum(((start[k] - target[k]) ** 2).sum() for k in start)
    return moved / span


@pytest.mark.parametrize("batch_syn", [0, 20, 5])
def test_batch_syn_is_minibatch_sgd_over_a_permutation(batch_syn):
    """Each student step takes the next chunk of a random permutation (the last chunk first, as
    the official code pops them); batch_syn = M is the whole set, the same as 0. With M/b steps
    every image is used exactly once."""
    net, start, target = _linear_start_target()
    g = torch.Generator().manual_seed(1)
    images, labels = torch.randn(20, 1, 8, 8, generator=g), torch.arange(10).repeat(2)
    steps = 20 // (batch_syn or 20)
    gen = torch.Generator().manual_seed(7)
    loss = trajectory_loss(
        net, start, target, images, labels, torch.tensor(0.5), steps, batch_syn, gen
    )
    perm = torch.randperm(20, generator=torch.Generator().manual_seed(7))
    chunks = list(perm.split(batch_syn or 20))[::-1]
    ref = _reference_loss(start, target, images, labels, 0.5, chunks)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    if 0 < batch_syn < 20:
        full = _reference_loss(start, target, images, labels, 0.5, [torch.arange(20)] * steps)
        assert abs(loss.item() - full.item()) > 1e-6  # mini-batches are a different trajectory


def test_whole_set_chunk_equals_full_batch():
    net, start, target = _linear_start_target(3)
    images, labels = torch.randn(20, 1, 8, 8), torch.arange(10).repeat(2)
    losses = [
        trajectory_loss(
            net, start, target, images, labels, torch.tensor(0.3), 4, b, torch.Generator()
        ).item()
        for b in (0, 20, 64)
    ]
    assert losses[1] == pytest.approx(losses[0], rel=1e-6)
    assert losses[2] == pytest.approx(losses[0], rel=1e-6)


# ----------------------------------------------------------------------------- config checks
def test_config_must_match_the_experts(experts_dir):
    with pytest.raises(ConfigError, match="experts: required"):
        resolve_config("mtt", "quick", "digits", 1, {})
    with pytest.raises(ConfigError, match="is not a directory"):
        _cfg(experts_dir.parent / "nowhere")
    with pytest.raises(ConfigError, match=r"model_options: \{'width': 16\}.*\{'width': 8\}"):
        _cfg(experts_dir, model_options={"width": 16})
    with pytest.raises(ConfigError, match="model: 'mlp'"):
        _cfg(experts_dir, model="mlp")
    with pytest.raises(ConfigError, match="needs epoch 4, but .* have 3 epochs"):
        _cfg(experts_dir, max_start_epoch=3, expert_epochs=2)
    with pytest.raises(ConfigError, match="trained on 'digits'"):
        resolve_config("mtt", "quick", "fashion-mnist", 1, {**TINY, "experts": str(experts_dir)})


def test_presets_write_down_the_paper_rows():
    spec = METHODS.get("mtt")
    row = spec.presets("paper", "cifar10", 1, {})
    assert (row["syn_steps"], row["expert_epochs"], row["max_start_epoch"]) == (50, 2, 2)
    assert (row["lr_img"], row["lr_lr"], row["lr_teacher"], row["iterations"]) == (
        100.0,
        1e-7,
        0.01,
        5000,
    )
    assert spec.presets("paper", "cifar10", 10, {})["lr_teacher"] == 0.001
    assert spec.presets("paper", "cifar100", 1, {})["expert_epochs"] == 3
    assert spec.presets("paper", "cifar100", 50, {})["batch_syn"] == 125
    tiny = spec.presets("paper", "imagefolder", 50, {})
    assert (tiny["syn_steps"], tiny["max_start_epoch"], tiny["batch_syn"]) == (20, 40, 300)
    assert (tiny["lr_img"], tiny["lr_lr"]) == (10000.0, 1e-4)
    assert "batch_syn" not in spec.presets("paper", "imagefolder", 1, {})
    assert spec.protocol == "dsa"


# ----------------------------------------------------------------------------- runs
def test_same_seed_same_set_and_step_size_is_saved(digits, experts_dir, tmp_path):
    cfg = _cfg(experts_dir)
    a, b, c = (_run(digits, cfg, seed=s) for s in (0, 0, 1))
    assert torch.equal(a.synthetic.images, b.synthetic.images)
    assert torch.equal(a.synthetic.step_size, b.synthetic.step_size)
    assert not torch.equal(a.synthetic.images, c.synthetic.images)
    assert not torch.equal(a.synthetic.images, a.initial_images)
    step = a.synthetic.step_size
    assert step.shape == (1,) and step.item() != 0.01 and a.records["step_size"] == step.item()
    a.synthetic.save(tmp_path / "set")
    assert torch.equal(SyntheticSet.load(tmp_path / "set").step_size, step)


def test_resume_continues_bitwise(digits, experts_dir, tmp_path):
    cfg = _cfg(experts_dir, iterations=4)
    whole = _run(digits, cfg).synthetic

    class Killed(Exception):
        pass

    def kill_after_two(record):
        if record["iteration"] == 2:
            raise Killed

    ckpt = Checkpointer(tmp_path / "checkpoint")
    with pytest.raises(Killed):
        _run(digits, cfg, checkpoint=ckpt, log=kill_after_two)
    assert Checkpointer(tmp_path / "checkpoint").load().meta["iteration"] == 2
    resumed = _run(digits, cfg, checkpoint=Checkpointer(tmp_path / "checkpoint")).synthetic
    assert torch.equal(resumed.images, whole.images)
    assert torch.equal(resumed.step_size, whole.step_size)


def test_divergence_is_a_numerical_error_naming_the_iteration(digits, experts_dir):
    cfg = _cfg(experts_dir, lr_teacher=1e12)
    with pytest.raises(NumericalError, match="iteration 0"):
        _run(digits, cfg)


def test_evaluation_trains_at_the_learned_step_size_under_its_own_protocol():
    syn = SyntheticSet(torch.zeros(10, 1, 8, 8), torch.arange(10), step_size=torch.tensor([0.0234]))
    syn.info["method"] = "mtt"
    own = eval_protocol(syn, "dsa-quick")
    assert isinstance(own, Protocol) and own.train.lr == pytest.approx(0.0234)
    assert own.name == "dsa-quick@lr=0.0234" and own.train.epochs == 300
    assert eval_protocol(syn, "idc-quick") == "idc-quick"  # another recipe keeps its rate
    syn.step_size = None
    assert eval_protocol(syn, "dsa-quick") == "dsa-quick"


def test_mtt_end_to_end_through_the_pipeline(experts_dir, tmp_path):
    run = RunConfig(method="mtt", dataset="digits", ipc=1, repeats=1, baselines=False)
    out = distill(run, {**TINY, "experts": str(experts_dir)}, tmp_path / "run")
    metrics = out.metrics
    step = out.synthetic.step_size.item()
    assert metrics["method"] == "mtt" and metrics["step_size"] == step
    assert metrics["models"]["convnet"]["protocol"] == f"dsa-quick@lr={step:.6g}"
    assert 0.0 <= metrics["test_acc_mean"] <= 1.0
    saved = SyntheticSet.load(tmp_path / "run" / "synthetic")
    assert torch.equal(saved.step_size, out.synthetic.step_size)


def test_cli_experts_flag_and_bad_directory(experts_dir, tmp_path, capsys):
    code = main(["distill", "--method", "dc", "--experts", str(experts_dir), "--out", "x"])
    assert code == 2 and "--experts applies to --method mtt only" in capsys.readouterr().err
    out = tmp_path / "run"
    code = main(
        ["distill", "--method", "mtt", "--experts", str(tmp_path / "no"), "--out", str(out)]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and "not a directory" in err and len(err.splitlines()) == 1
    assert not out.exists()  # refused before any work or write


def test_cli_batch_syn_flag_reaches_the_method_config(experts_dir, monkeypatch, capsys):
    import exdistill.cli as cli

    seen = {}
    monkeypatch.setattr(
        cli, "_distill_and_report", lambda run, overrides, *a, **k: seen.update(overrides)
    )
    argv = ["distill", "--method", "mtt", "--experts", str(experts_dir), "--batch-syn", "7"]
    assert main([*argv, "--out", "unused"]) == 0
    assert seen == {"experts": str(experts_dir), "batch_syn": 7}
    assert main(["distill", "--method", "dm", "--batch-syn", "7", "--out", "x"]) == 2
    assert "--batch-syn applies to --method mtt only" in capsys.readouterr().err


def test_cli_experts_command_trains_and_resumes(tmp_path, capsys):
    argv = ["experts", "--num-experts", "1", "--epochs", "1", "--out", str(tmp_path / "e")]
    argv += ["--set", "model_options.width=4", "--set", "train.batch_size=512"]
    assert main(argv) == 0
    assert "files written" in capsys.readouterr().out
    assert ExpertSet(tmp_path / "e").complete() == [0]
    assert main(argv) == 2  # not empty: needs --resume
    assert main([*argv, "--resume"]) == 0


def test_data_other_than_the_experts_is_refused_before_the_run_directory(experts_dir, tmp_path):
    run = RunConfig(method="mtt", dataset="digits", ipc=1, repeats=1, val_fraction=0.2)
    with pytest.raises(DataError, match="the experts were trained on data with"):
        distill(run, {**TINY, "experts": str(experts_dir)}, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_experts_trained_with_momentum_are_refused(digits, tmp_path):
    cfg = resolve_expert_config("quick", "digits", overrides={**EXPERTS, "num_experts": 1})
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, momentum=0.9))
    train_experts(digits, cfg, tmp_path / "momentum")
    with pytest.raises(ConfigError, match="momentum 0.9"):
        _cfg(tmp_path / "momentum")


def test_config_hash_names_the_experts_by_content_not_by_directory(experts_dir, tmp_path):
    copy = tmp_path / "elsewhere"
    shutil.copytree(experts_dir, copy)
    assert config_hash(_cfg(copy)) == config_hash(_cfg(experts_dir))
    assert config_hash(_cfg(copy, lr_img=123.0)) != config_hash(_cfg(experts_dir))
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["library_version"] = "9.9.9"  # what --resume rewrites: the same experts
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert config_hash(_cfg(copy)) == config_hash(_cfg(experts_dir))
    manifest["experts"] = manifest["experts"][:1]  # other experts: another hash
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert config_hash(_cfg(copy)) != config_hash(_cfg(experts_dir))


def test_a_suite_knows_an_mtt_cell_by_its_experts_content_or_its_old_path_hash(
    experts_dir, tmp_path
):
    from exdistill import bench

    suite = bench.Suite("t", ("digits",), (1,), ("mtt",), overrides={"mtt": TINY})
    ctx = bench.CellContext(suite, tmp_path / "suite", None, "cpu")
    cell = bench.Cell("digits", 1, "mtt")
    assert bench.expected_config_hashes(cell, ctx) is None  # no experts yet: nothing to compare
    here = tmp_path / "suite" / "experts" / "digits"
    shutil.copytree(experts_dir, here)
    cfg = _cfg(here)
    by_content, by_path = config_hash(cfg), config_hash(to_dict(cfg))
    assert by_content != by_path and by_content == config_hash(_cfg(experts_dir))
    assert bench.expected_config_hashes(cell, ctx) == {by_content, by_path}
