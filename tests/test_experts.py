"""Expert trajectories: exact files, checksums, refusal of damaged files, resume after a kill."""

import contextlib
import hashlib
import json
import shutil

import pytest
import torch

from exdistill.data import load_dataset
from exdistill.errors import ConfigError, DataError
from exdistill.experts import (
    MANIFEST,
    ExpertSet,
    epoch_file,
    resolve_expert_config,
    train_experts,
)
from exdistill.models import build_model
from exdistill.progress import NullProgress
from exdistill.seeding import generator
from exdistill.train import train_classifier

TINY = {"num_experts": 2, "train": {"epochs": 3, "batch_size": 256}, "model_options": {"width": 8}}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def cfg():
    return resolve_expert_config("quick", "digits", overrides=TINY)


@pytest.fixture(scope="module")
def experts_dir(digits, cfg, tmp_path_factory):
    out = tmp_path_factory.mktemp("experts") / "digits"
    train_experts(digits, cfg, out, seed=0)
    return out


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _checksums(directory) -> list[list[str]]:
    manifest = json.loads((directory / MANIFEST).read_text())
    return [[r["sha256"] for r in e["epochs"]] for e in manifest["experts"]]


def test_manifest_records_provenance_and_every_checksum(experts_dir, cfg):
    manifest = json.loads((experts_dir / MANIFEST).read_text())
    assert manifest["complete"] is True
    assert manifest["dataset"]["name"] == "digits"
    assert manifest["config"]["model"] == "convnet"
    assert manifest["config"]["model_options"] == {"width": 8}
    train = manifest["config"]["train"]
    assert (train["lr"], train["momentum"], train["weight_decay"]) == (0.01, 0.0, 0.0)
    assert manifest["seed"] == 0 and manifest["library_version"]
    assert len(manifest["experts"]) == 2
    for i, expert in enumerate(manifest["experts"]):
        assert isinstance(expert["init_seed"], int) and isinstance(expert["train_seed"], int)
        assert [r["file"] for r in expert["epochs"]] == [epoch_file(i, e) for e in range(4)]
        for record in expert["epochs"]:
            assert _sha(experts_dir / record["file"]) == record["sha256"]


def test_trajectory_is_the_one_training_loop_bit_for_bit(experts_dir, digits, cfg):
    """Epoch 0 is the seeded initialisation; the last epoch is train_classifier's result."""
    experts = ExpertSet(experts_dir)
    net = build_model(
        "convnet", 1, 10, (8, 8), generator=generator(0, "expert", 1, "init"), width=8
    )
    for name, p in net.named_parameters():
        assert torch.equal(experts.parameters(1, 0)[name], p.detach())
    images, labels = digits.normalized("train")
    train_classifier(net, images, labels, cfg.train, generator(0, "expert", 1, "train"))
    final = experts.parameters(1, 3)
    for name, p in net.named_parameters():
        assert torch.equal(final[name], p.detach()), name
    assert not torch.equal(
        experts.parameters(1, 1)["classifier.weight"], final["classifier.weight"]
    )


def test_corrupted_expert_file_is_refused(experts_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(experts_dir, copy)
    path = copy / epoch_file(0, 2)
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # one flipped bit pattern inside the tensor data
    path.write_bytes(bytes(data))
    experts = ExpertSet(copy)
    experts.parameters(0, 1)  # the others still load
    with pytest.raises(DataError, match="checksum mismatch"):
        experts.parameters(0, 2)


def test_bad_directories_are_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match="not a directory"):
        ExpertSet(tmp_path / "missing")
    with pytest.raises(ConfigError, match="holds no manifest.json"):
        ExpertSet(tmp_path)
    (tmp_path / MANIFEST).write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        ExpertSet(tmp_path)
    (tmp_path / MANIFEST).write_text(json.dumps({"format": "something else"}))
    with pytest.raises(DataError, match="not an exdistill experts manifest"):
        ExpertSet(tmp_path)


class _Killed(Exception):
    pass


def _killing_progress(after: int):
    """A progress factory whose bar raises after ``after`` steps: a kill mid-expert."""

    class Bar(NullProgress):
        count = 0

        def update(self, n: int = 1) -> None:
            Bar.count += n
            if Bar.count >= after:
                raise _Killed

    return lambda total, desc: contextlib.nullcontext(Bar())


def test_resume_skips_finished_files_and_ends_bit_identical(experts_dir, digits, cfg, tmp_path):
    out = tmp_path / "killed"
    # 5 steps per epoch: the kill lands in epoch 2 of expert 1, after 4 + 2 epochs are written.
    with pytest.raises(_Killed):
        train_experts(digits, cfg, out, seed=0, progress=_killing_progress(5 * 3 + 5 * 2 + 1))
    partial = _checksums(out)
    assert [len(e) for e in partial] == [4, 3]
    mtimes = {p: p.stat().st_mtime_ns for p in out.glob("expert_*/*.safetensors")}
    with pytest.raises(ConfigError, match="--resume"):
        train_experts(digits, cfg, out, seed=0)  # a non-empty out needs resume
    summary = train_experts(digits, cfg, out, seed=0, resume=True)
    assert (summary.skipped, summary.trained, summary.repaired) == (7, 1, 0)
    assert all(p.stat().st_mtime_ns == t for p, t in mtimes.items())  # kept, not rewritten
    assert _checksums(out) == _checksums(experts_dir)  # as if never killed
    again = train_experts(digits, cfg, out, seed=0, resume=True)
    assert (again.skipped, again.trained) == (8, 0)


def test_resume_retrains_a_damaged_file_and_refuses_another_config(
    experts_dir, digits, cfg, tmp_path
):
    out = tmp_path / "copy"
    shutil.copytree(experts_dir, out)
    (out / epoch_file(1, 2)).write_bytes(b"garbage")
    summary = train_experts(digits, cfg, out, seed=0, resume=True)
    assert (summary.repaired, summary.trained) == (2, 2)  # epochs 2 and 3 of expert 1
    assert _checksums(out) == _checksums(experts_dir)
    other = resolve_expert_config(
        "quick", "digits", overrides={**TINY, "train": {**TINY["train"], "lr": 0.02}}
    )
    with pytest.raises(ConfigError, match="train.lr: 0.01 → 0.02"):
        train_experts(digits, other, out, seed=0, resume=True)
    with pytest.raises(ConfigError, match="seed: 0 → 1"):
        train_experts(digits, cfg, out, seed=1, resume=True)


def test_expert_config_is_validated():
    with pytest.raises(ConfigError, match="max_steps"):
        resolve_expert_config("quick", "digits", overrides={"train": {"max_steps": 10}})
    with pytest.raises(ConfigError, match="unknown 'nope' for experts"):
        resolve_expert_config("quick", "digits", protocol="nope")
    with pytest.raises(ConfigError, match="num_experts"):
        resolve_expert_config("quick", "digits", overrides={"num_experts": 0})
    dsa = resolve_expert_config("paper", "cifar10", protocol="dsa")
    assert (dsa.num_experts, dsa.epochs, dsa.train.momentum) == (100, 50, 0.9)
    paper = resolve_expert_config("paper", "cifar10")
    assert (paper.train.batch_size, paper.train.lr, paper.train.augment_mode) == (
        256,
        0.01,
        "single",
    )
