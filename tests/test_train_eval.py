"""The training loop, evaluation over repeats, protocols and the cached baselines."""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from exdistill import baselines as baselines_module
from exdistill.baselines import baseline, baseline_steps, cache_path, random_subset
from exdistill.data import load_dataset
from exdistill.errors import ConfigError
from exdistill.evaluation import (
    FULL_EPOCHS,
    PROTOCOLS,
    EvalResult,
    Protocol,
    converged,
    eval_steps,
    evaluate_images,
    protocol_key,
)
from exdistill.models import QUICK_WIDTH, build_model
from exdistill.seeding import derive_seed
from exdistill.train import TrainConfig, Trainer, accuracy, predict, train_classifier

PLAIN = TrainConfig(
    epochs=1000, batch_size=64, milestones=(0.5,), gamma=0.1, augment="", cutmix_prob=0.0
)
# A protocol small enough for tests: 20 SGD steps on a width-16 ConvNet.
TINY = Protocol("test-tiny", replace(PLAIN, max_steps=20), model_options={"width": 16})


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def small_set(digits, per_class: int = 10, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    idx = random_subset(digits, per_class, seed)
    return digits.normalize(digits.train.images[idx]), digits.train.labels[idx]


def convnet(digits, seed: int = 0, width: int = 16) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(seed)
    return build_model("convnet", 1, 10, digits.image_size, generator=gen, width=width)


# ----------------------------------------------------------------------------- TrainConfig
def test_total_steps_and_max_steps_cap() -> None:
    cfg = TrainConfig(epochs=3, batch_size=64)
    assert cfg.total_steps(130) == 9  # ceil(130 / 64) = 3 batches per epoch
    assert cfg.total_steps(128) == 6
    assert replace(cfg, max_steps=5).total_steps(130) == 5
    assert replace(cfg, max_steps=100).total_steps(130) == 9  # a cap, never an extension
    assert replace(cfg, max_steps=0).total_steps(1) == 3


def test_lr_schedule_steps_at_milestones() -> None:
    model = torch.nn.Linear(2, 2)
    cfg = TrainConfig(lr=1.0, milestones=(0.5, 5 / 6), gamma=0.1, augment="", cutmix_prob=0.0)
    trainer = Trainer(model, cfg, total_steps=60, generator=torch.Generator().manual_seed(0))
    expected = {0: 1.0, 29: 1.0, 30: 0.1, 49: 0.1, 50: 0.01, 59: 0.01}
    for step, lr in expected.items():
        assert trainer.lr_at(step) == pytest.approx(lr)
    idc = Trainer(model, TrainConfig(lr=0.01), 300, torch.Generator())  # ×0.2 at 2/3 and 5/6
    assert [idc.lr_at(s) for s in (199, 200, 249, 250)] == pytest.approx(
        [0.01, 0.002, 0.002, 0.0004]
    )
    assert Trainer(model, cfg, 0, torch.Generator()).total_steps == 1


def test_trainer_step_applies_the_scheduled_lr() -> None:
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    cfg = TrainConfig(lr=0.5, milestones=(0.5,), gamma=0.1, augment="", cutmix_prob=0.0)
    trainer = Trainer(model, cfg, total_steps=4, generator=torch.Generator().manual_seed(0))
    x, y = torch.randn(6, 1, 4, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    lrs = []
    for _ in range(4):
        before = [p.detach().clone() for p in model.parameters()]
        loss = trainer.step(x, y)
        lrs.append(trainer.optimizer.param_groups[0]["lr"])
        assert loss.ndim == 0 and not loss.requires_grad and torch.isfinite(loss)
        assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert lrs == pytest.approx([0.5, 0.5, 0.05, 0.05])
    assert trainer.steps_done == 4


def test_trainer_with_augmentation_and_cutmix(digits) -> None:
    x, y = small_set(digits, 2)
    model = convnet(digits)
    trainer = Trainer(model, TrainConfig(cutmix_prob=1.0), 3, torch.Generator().manual_seed(0))
    losses = [trainer.step(x, y) for _ in range(3)]
    assert all(torch.isfinite(loss) for loss in losses)


# ----------------------------------------------------------------------------- train_classifier
def test_train_classifier_learns_digits_quickly(digits) -> None:
    x, y = digits.normalized("train")
    test_x, test_y = digits.normalized("test")
    model = convnet(digits, width=32)
    chance = accuracy(model, test_x, test_y)
    assert chance < 0.3  # untrained: near 1/10, so the bar below means something
    cfg = replace(PLAIN, max_steps=200)
    train_classifier(model, x, y, cfg, torch.Generator().manual_seed(0))
    acc = accuracy(model, test_x, test_y)
    assert acc > 0.5, acc  # measured ≈ 0.9 after 200 steps (≈ 10 epochs)
    assert predict(model, test_x[:3]).shape == (3, 10)


def test_train_classifier_stops_at_total_steps(digits) -> None:
    x, y = small_set(digits, 10)  # 100 images, batch 64 → 2 steps per epoch

    class Count:
        n = 0

        def update(self, k: int = 1) -> None:
            self.n += k

        def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
            pass

    for cfg, expected in [(replace(PLAIN, epochs=3), 6), (replace(PLAIN, max_steps=5), 5)]:
        bar = Count()
        train_classifier(convnet(digits), x, y, cfg, torch.Generator().manual_seed(0), bar)
        assert bar.n == expected


def test_train_classifier_same_seed_bitwise_different_seed_differs(digits) -> None:
    x, y = small_set(digits, 5)
    cfg = TrainConfig(epochs=3, batch_size=16)  # augmentation and CutMix draw from the generator

    def weights(seed: int) -> list[torch.Tensor]:
        model = convnet(digits)
        train_classifier(model, x, y, cfg, torch.Generator().manual_seed(seed))
        return [p.detach().clone() for p in model.parameters()]

    a, b, c = weights(0), weights(0), weights(1)
    assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True))
    assert not all(torch.equal(p, q) for p, q in zip(a, c, strict=True))


def test_accuracy_of_empty_split_is_nan(digits) -> None:
    acc = accuracy(convnet(digits), torch.zeros(0, 1, 8, 8), torch.zeros(0, dtype=torch.long))
    assert acc != acc


# ----------------------------------------------------------------------------- evaluation
def test_protocols_registered() -> None:
    names = PROTOCOLS.names()
    for family in ("idc", "dc", "dsa"):
        assert family in names and f"{family}-quick" in names
        full, quick = PROTOCOLS.get(family), PROTOCOLS.get(f"{family}-quick")
        assert quick.train.max_steps == 1500 and quick.train.epochs == 300
        assert quick.model_options == {"width": QUICK_WIDTH} and full.model_options == {}
        assert full.train.max_steps == 0
    idc, dc = PROTOCOLS.get("idc").train, PROTOCOLS.get("dc").train
    assert (idc.epochs, idc.batch_size, idc.gamma, idc.cutmix_prob) == (1000, 64, 0.2, 0.5)
    assert idc.milestones == pytest.approx((2 / 3, 5 / 6))
    assert (dc.epochs, dc.batch_size, dc.milestones, dc.gamma) == (300, 256, (0.5,), 0.1)
    assert PROTOCOLS.get("dsa").train.epochs == 1000
    assert eval_steps(100, "dc-quick", 3) == 3 * 300  # 1 batch of 256 per epoch
    assert eval_steps(10_000, "dc-quick", 2) == 2 * 1500
    with pytest.raises(ConfigError, match="unknown protocol"):
        eval_steps(10, "nope", 1)


def test_evaluate_images_result_fields(digits) -> None:
    x, y = small_set(digits, 3)
    res = evaluate_images(x, y, digits, TINY, repeats=3, seed=5)
    assert res.protocol == "test-tiny" and res.model == "convnet"
    assert len(res.test_accs) == len(res.val_accs) == 3
    assert all(0.0 <= a <= 1.0 for a in res.test_accs + res.val_accs)
    assert res.seeds == [derive_seed(5, "repeat", r) for r in range(3)]
    assert res.train_images == 30 and res.seconds > 0
    assert res.mean == pytest.approx(statistics.fmean(res.test_accs))
    assert res.std == pytest.approx(statistics.pstdev(res.test_accs))
    d = res.to_dict()
    assert d["test_acc_mean"] == res.mean and d["test_acc_std"] == res.std
    assert d["test_accs"] == res.test_accs and d["val_accs"] == res.val_accs
    assert d["val_acc_mean"] == pytest.approx(statistics.fmean(res.val_accs))
    assert d["seeds"] == res.seeds
    back = EvalResult.from_dict(json.loads(json.dumps(d)))
    assert back.test_accs == res.test_accs and back.seeds == res.seeds  # 63-bit seeds survive
    one = EvalResult("p", "m", [0.5], [0.4], [1], 10, 0.0)
    assert one.std == 0.0


def test_evaluate_images_seeded(digits) -> None:
    x, y = small_set(digits, 3)
    a = evaluate_images(x, y, digits, TINY, repeats=2, seed=0)
    b = evaluate_images(x, y, digits, TINY, repeats=2, seed=0)
    c = evaluate_images(x, y, digits, TINY, repeats=2, seed=1)
    assert (a.test_accs, a.val_accs, a.seeds) == (b.test_accs, b.val_accs, b.seeds)  # bitwise
    assert a.seeds != c.seeds
    assert (a.test_accs, a.val_accs) != (c.test_accs, c.val_accs)
    # repeat r depends on (seed, r) only: a rank evaluating every other repeat agrees
    odd = evaluate_images(x, y, digits, TINY, repeats=2, seed=0, ranks=(1, 2))
    assert (odd.test_accs, odd.seeds) == (a.test_accs[1:], a.seeds[1:])


def test_evaluate_images_other_model_and_registered_name(digits) -> None:
    x, y = small_set(digits, 2)
    res = evaluate_images(x, y, digits, TINY, repeats=1, model="mlp")
    assert res.model == "mlp" and len(res.test_accs) == 1
    assert protocol_key(TINY, "mlp") != protocol_key(TINY, "convnet")
    with pytest.raises(ConfigError, match="unknown protocol 'nope'"):
        evaluate_images(x, y, digits, "nope", repeats=1)


# ----------------------------------------------------------------------------- baselines
def test_random_subset_is_seeded_and_per_class(digits) -> None:
    a, b, c = random_subset(digits, 3, 0), random_subset(digits, 3, 0), random_subset(digits, 3, 1)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert digits.train.labels[a].tolist() == [k for k in range(10) for _ in range(3)]


def test_baseline_random_cached_and_keyed_by_ipc(digits, tmp_path: Path, monkeypatch) -> None:
    cache = tmp_path / "bl"
    first = baseline("random", digits, 1, TINY, repeats=2, seed=0, cache_dir=cache)
    assert len(first.test_accs) == 2 and first.train_images == 10
    files = list((cache / "baselines").iterdir())
    assert len(files) == 1 and files[0].name.startswith("digits-random-test-tiny-convnet-")

    def fail(*args, **kwargs):
        raise AssertionError("should have been read from the cache")

    monkeypatch.setattr(baselines_module, "evaluate_images", fail)
    again = baseline("random", digits, 1, TINY, repeats=2, seed=0, cache_dir=cache)
    assert again.to_dict() == first.to_dict()
    for changed in ({"ipc": 2}, {"seed": 1}, {"repeats": 1}, {"protocol": replace(TINY, name="x")}):
        args = {"ipc": 1, "seed": 0, "repeats": 2, "protocol": TINY, **changed}
        with pytest.raises(AssertionError, match="cache"):  # a different key: recomputed
            baseline("random", digits, cache_dir=cache, **args)


def test_baseline_damaged_cache_is_recomputed(digits, tmp_path: Path) -> None:
    first = baseline("random", digits, 1, TINY, repeats=1, cache_dir=tmp_path)
    path = cache_path(tmp_path, "random", digits, 1, TINY, "convnet", 1, 0)
    assert path.is_file()
    path.write_text("{torn")
    again = baseline("random", digits, 1, TINY, repeats=1, cache_dir=tmp_path)
    assert again.test_accs == first.test_accs  # same seeds → same numbers
    assert json.loads(path.read_text())["test_accs"] == first.test_accs


def test_baseline_full_ignores_ipc_in_its_key(digits, tmp_path: Path) -> None:
    res = baseline("full", digits, 1, TINY, repeats=1, cache_dir=tmp_path)
    assert res.train_images == len(digits.train)
    assert cache_path(tmp_path, "full", digits, 1, TINY, "convnet", 1, 0) == cache_path(
        tmp_path, "full", digits, 50, TINY, "convnet", 1, 0
    )
    assert cache_path(tmp_path, "random", digits, 1, TINY, "convnet", 1, 0) != cache_path(
        tmp_path, "random", digits, 2, TINY, "convnet", 1, 0
    )
    # the full-data bound is not capped at the protocol's 20 steps: FULL_EPOCHS epochs at most
    epoch = math.ceil(len(digits.train) / TINY.train.batch_size)
    assert baseline_steps("full", digits, 1, TINY, 2) == 2 * FULL_EPOCHS * epoch
    # but never fewer steps than the capped protocol: 1,500 steps of digits are 79 epochs
    assert converged(PROTOCOLS.get("idc-quick"), len(digits.train)).train.epochs == 79
    assert baseline_steps("random", digits, 1, replace(TINY, train=PLAIN), 1) == 1000


def test_baseline_unknown_kind_and_no_cache(digits, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown baseline 'best'; choose from: random, full"):
        baseline("best", digits, 1, TINY)
    baseline("random", digits, 1, TINY, repeats=1)  # cache_dir None: nothing written
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("epochs", 0),
        ("batch_size", 0),
        ("lr", 0.0),
        ("momentum", 1.0),
        ("weight_decay", -1e-4),
        ("milestones", (0.5, 1.5)),
        ("cutmix_prob", 2.0),
        ("max_steps", -1),
    ],
)
def test_train_config_names_the_bad_field(field, value) -> None:
    cfg = replace(TrainConfig(), **{field: value})
    with pytest.raises(ConfigError, match=f"train.{field}"):
        cfg.validate()
    model = build_model("convnet", 1, 10, (8, 8), generator=torch.Generator().manual_seed(0))
    with pytest.raises(ConfigError, match=f"train.{field}"):
        Trainer(model, cfg, total_steps=10, generator=torch.Generator().manual_seed(0))


def test_converged_training_stops_on_validation_and_tests_the_best_epoch(digits) -> None:
    proto = converged(TINY, len(digits.train), epochs=12)
    assert proto.train.max_steps == 0 and proto.train.epochs == 12
    assert proto.name == "test-tiny+converged"
    images, labels = digits.normalized("train")
    res = evaluate_images(images, labels, digits, proto, repeats=1, patience=2)
    (curve,) = res.curves
    best = max(range(len(curve)), key=lambda i: (curve[i], i))
    # It ran past the schedule's last decay (epoch 6 of 12), stopped only once ``patience``
    # epochs had passed without a better one, and reports its best epoch's network.
    assert len(curve) == 12 or (len(curve) >= 6 and len(curve) - 1 - best >= 2)
    assert res.val_accs[0] == pytest.approx(curve[best])
    assert res.to_dict()["val_curves"] == [curve]
    assert EvalResult.from_dict(res.to_dict()).curves == [curve]
    plain = evaluate_images(images[:200], labels[:200], digits, TINY, repeats=1)
    assert plain.curves == [] and "val_curves" not in plain.to_dict()
