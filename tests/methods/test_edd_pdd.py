"""PDD's mechanisms as EDD options: conditioning, the ensemble filter, budget per segment, and
the registered ``pdd`` method."""

import pytest
import torch

from exdistill.data import load_dataset
from exdistill.errors import ConfigError
from exdistill.methods import METHODS, DistillContext, resolve_config
from exdistill.methods.edd import EDDConfig, FilterNetwork, segment_budgets
from exdistill.methods.filtering import FilterOutcome, combine_outcomes, select_pool
from exdistill.methods.gradient import GradientMatching
from exdistill.synthetic import SyntheticSet

BASE = {"iterations": 4, "match_steps": 2, "model_options": {"width": 8}}
FILTER = {"epochs": 3, "max_steps": 6}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _run(digits, ipc=2, method="edd", **overrides):
    cfg = resolve_config(
        method,
        "quick",
        "digits",
        ipc,
        {
            "base_config": BASE,
            "filter": FILTER,
            "filter_model_options": {"width": 8},
            "segment_evals": False,
            "condition_epochs": 0,  # off unless a test turns it on (EDD's quick preset: on)
            **overrides,
        },
    )
    return METHODS.get(method).run(DistillContext(digits, ipc, 0), cfg)


def _spy(monkeypatch, name):
    calls = []
    original = getattr(GradientMatching, name)

    def spy(self, *args, **kwargs):
        calls.append((args, kwargs))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(GradientMatching, name, spy)
    return calls


# ----------------------------------------------------------------------------- conditioning
def test_conditioning_trains_each_fresh_network_of_later_segments_on_the_frozen_images(
    digits, monkeypatch
):
    calls = _spy(monkeypatch, "condition")
    result = _run(digits, condition_epochs=2, condition_max_steps=3)
    # Segment 1 gets 2 of the 4 rounds; each round's fresh θ is conditioned once, on the
    # decoded frozen segment 0 (10 classes × 1 stored image × factor² 1 on digits).
    assert len(calls) == 2
    (net, frozen, job, _), _ = calls[0]
    assert frozen[0].shape[0] == 10 and torch.equal(frozen[1], torch.arange(10))
    assert job.condition_epochs == 2 and job.condition_max_steps == 3
    plain = _run(digits)
    syn, ref = result.synthetic, plain.synthetic
    first = syn.segments == 0
    assert torch.equal(syn.images[first], ref.images[first])  # segment 0: nothing to condition
    assert not torch.equal(syn.images[~first], ref.images[~first])


def test_conditioning_off_changes_nothing(digits):
    a = _run(digits, condition_epochs=0, condition_max_steps=5).synthetic
    b = _run(digits).synthetic
    assert torch.equal(a.images, b.images)


def test_edd_quick_preset_conditions_gradient_bases_only():
    idc = resolve_config("edd", "quick", "digits", 2, {})
    dm = resolve_config("edd", "quick", "digits", 2, {"base": "dm"})
    paper = resolve_config("edd", "paper", "digits", 2, {})
    assert (idc.condition_epochs, idc.condition_max_steps) == (60, 300)
    assert dm.condition_epochs == 0 and paper.condition_epochs == 0


def test_conditioning_needs_a_base_whose_networks_train():
    with pytest.raises(ConfigError, match="condition_epochs: base 'dm'"):
        resolve_config("edd", "quick", "digits", 2, {"base": "dm", "condition_epochs": 1})
    with pytest.raises(ConfigError, match="condition_epochs"):
        resolve_config("edd", "quick", "digits", 2, {"condition_epochs": -1})


# ----------------------------------------------------------------------------- ensemble filter
def test_an_ensemble_counts_an_image_correct_only_when_every_network_is_right():
    a = FilterOutcome(torch.tensor([True, True, False, True]), torch.tensor([0.9, 0.8, 0.1, 0.7]))
    b = FilterOutcome(torch.tensor([True, False, False, True]), torch.tensor([0.7, 0.3, 0.2, 0.9]))
    both = combine_outcomes([a, b])
    assert both.correct.tolist() == [True, False, False, True]
    assert torch.allclose(both.confidence, torch.tensor([0.8, 0.55, 0.15, 0.8]))
    assert combine_outcomes([a]) is a


def test_keep_any_wrong_keeps_only_misclassified_images_above_the_floor():
    idx = [torch.arange(6)]
    correct = torch.tensor([True, True, True, False, True, False])
    outcome = FilterOutcome(correct, torch.tensor([0.9, 0.8, 0.7, 0.1, 0.6, 0.2]))
    gen = torch.Generator().manual_seed(0)
    assert select_pool(idx, outcome, 1.0, "confident", 0, gen)[0].tolist() == [3, 5]
    # The floor gives back the least confident correct images first.
    assert select_pool(idx, outcome, 1.0, "confident", 3, gen)[0].tolist() == [3, 4, 5]


def test_filter_network_zero_is_the_single_network(digits):
    syn = _run(digits).synthetic
    cfg = resolve_config("edd", "quick", "digits", 2, {"filter": FILTER})
    ctx = DistillContext(digits, 2, 0)
    single, *_ = FilterNetwork(cfg, ctx)(syn, 0)
    cfg.filter_networks = 3
    nets = FilterNetwork(cfg, ctx).networks(syn, 0)
    first = nets[0][0]
    assert torch.equal(first.correct, single.correct)  # the same draws as N = 1
    assert torch.equal(first.confidence, single.confidence)
    assert not torch.equal(nets[1][0].confidence, first.confidence)  # others differ
    ensemble, train_acc, val_acc = FilterNetwork(cfg, ctx)(syn, 0)
    assert torch.equal(
        ensemble.correct, nets[0][0].correct & nets[1][0].correct & nets[2][0].correct
    )
    assert val_acc == pytest.approx(sum(v for _, v in nets) / 3)


def test_any_wrong_pool_is_smaller_than_the_drop_rule_pool(digits):
    drop = _run(digits, ipc=2, filter_networks=2).records["segments"][1]["real_per_class"]
    wrong = _run(digits, ipc=2, filter_networks=2, keep="any_wrong")
    kept = wrong.records["segments"][1]["real_per_class"]
    floor = resolve_config("idc", "quick", "digits", 2).batch_real
    assert all(floor <= k <= d for k, d in zip(kept, drop, strict=True))


# ----------------------------------------------------------------------------- budget
def test_budget_per_segment_gives_every_segment_the_base_rounds(digits, monkeypatch):
    calls = _spy(monkeypatch, "distill_segment")
    _run(digits, ipc=3, segments=(1, 1, 1), budget="per_segment")
    assert [args[3] for args, _ in calls] == [4, 4, 4]
    assert segment_budgets(EDDConfig(), 4, (1, 1, 1)) == [2, 1, 1]


def test_progress_counts_the_per_segment_budget(digits):
    ctx = DistillContext(digits, 2, 0)
    total = resolve_config("edd", "quick", "digits", 2, {"base_config": BASE})
    per_segment = resolve_config(
        "edd", "quick", "digits", 2, {"base_config": BASE, "budget": "per_segment"}
    )
    steps = METHODS.get("edd").steps
    assert steps(per_segment, ctx) == 2 * steps(total, ctx) == 2 * 4 * 2


# ----------------------------------------------------------------------------- pdd
def test_pdd_is_edd_with_the_pdd_mechanisms_on():
    cfg = resolve_config("pdd", "quick", "fashion-mnist", 10)
    assert isinstance(cfg, EDDConfig)
    assert (cfg.keep, cfg.budget, cfg.reg_weight) == ("any_wrong", "per_segment", 0.0)
    assert cfg.condition_epochs > 0 and cfg.filter_networks > 1
    assert resolve_config("pdd", "paper", "cifar10", 10).filter_networks == 10
    # The user's values still win over the preset.
    assert resolve_config("pdd", "quick", "digits", 10, {"reg_weight": 0.5}).reg_weight == 0.5


def test_pdd_runs_and_keeps_the_shared_start(digits):
    result = _run(
        digits, method="pdd", condition_epochs=1, condition_max_steps=2, filter_networks=2
    )
    syn: SyntheticSet = result.synthetic
    assert syn.images.shape[0] == 20 and torch.isfinite(syn.images).all()
    edd = _run(digits)
    assert torch.equal(result.initial_images, edd.initial_images)
