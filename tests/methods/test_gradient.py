"""DC, DSA, IDC: registration, presets, determinism, and that matching beats noise."""

import dataclasses

import pytest
import torch

from exdistill.data import load_dataset
from exdistill.errors import ConfigError
from exdistill.evaluation import PROTOCOLS, evaluate_images
from exdistill.methods import METHODS, DistillContext, resolve_config
from exdistill.methods.gradient import GradientMatching
from exdistill.methods.segment import initial_indices
from exdistill.seeding import generator
from exdistill.synthetic import SyntheticSet

TINY = {"iterations": 2, "match_steps": 2, "model_options": {"width": 16}}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _distill(name, dataset, ipc=1, seed=0, **overrides):
    cfg = resolve_config(name, "quick", "digits", ipc, {**TINY, **overrides})
    ctx = DistillContext(dataset, ipc, seed)
    return METHODS.get(name).run(ctx, cfg)


@pytest.mark.parametrize("name", ["dc", "dsa", "idc"])
def test_same_seed_same_synthetic_set(digits, name):
    a = _distill(name, digits, seed=3).synthetic
    b = _distill(name, digits, seed=3).synthetic
    c = _distill(name, digits, seed=4).synthetic
    assert torch.equal(a.images, b.images)
    assert not torch.equal(a.images, c.images)


@pytest.mark.parametrize("name", ["dc", "dsa", "idc"])
def test_distillation_changes_the_images_and_keeps_labels(digits, name):
    result = _distill(name, digits, ipc=2)
    syn = result.synthetic
    assert syn.images.shape[0] == 2 * digits.num_classes
    assert torch.equal(syn.labels, torch.arange(10).repeat_interleave(2))
    assert not torch.equal(syn.images, result.initial_images)
    assert torch.isfinite(syn.images).all()


def test_idc_images_stay_in_the_valid_range(digits):
    syn = _distill("idc", digits, lr_img=10.0).synthetic
    low, high = digits.valid_range()
    assert (syn.images >= low - 1e-6).all() and (syn.images <= high + 1e-6).all()


def test_idc_decodes_factor_squared_images(digits):
    syn = _distill("idc", digits, ipc=1, factor=2).synthetic
    images, labels = syn.decoded()
    assert syn.factor == 2 and images.shape == (40, 1, 8, 8) and labels.shape == (40,)


def test_method_presets_differ_as_the_papers_say():
    dc = resolve_config("dc", "paper", "cifar10", 10)
    dsa = resolve_config("dsa", "paper", "cifar10", 10)
    idc = resolve_config("idc", "paper", "cifar10", 10)
    assert (dc.match_steps, dc.net_epochs, dc.iterations) == (10, 50, 1000)
    assert resolve_config("dc", "paper", "cifar10", 1).match_steps == 1
    assert resolve_config("dc", "paper", "cifar10", 50).match_steps == 50
    assert dc.distance == "dc" and dc.augment == "" and dc.factor == 1
    assert dsa.augment and dsa.augment_mode == "single"
    assert idc.factor == 2 and idc.distance == "l1" and idc.layers == "conv"
    assert idc.net_source == "real" and idc.match_steps == 100 and idc.lr_img == 5e-3
    # θ between matches: DC/DSA plain SGD 0.01; IDC SGD 0.01 with momentum 0.9 and decay 5e-4.
    for cfg in (dc, dsa):
        assert (cfg.net.lr, cfg.net.momentum, cfg.net.weight_decay) == (0.01, 0.0, 0.0)
    assert (idc.net.lr, idc.net.momentum, idc.net.weight_decay) == (0.01, 0.9, 5e-4)


def test_bad_method_configs_are_rejected():
    with pytest.raises(ConfigError, match="distance"):
        resolve_config("idc", "quick", "digits", 1, {"distance": "nope"})
    with pytest.raises(ConfigError, match="unknown config key 'bogus'"):
        resolve_config("idc", "quick", "digits", 1, {"bogus": 1})
    with pytest.raises(ConfigError, match="preset"):
        resolve_config("idc", "fast", "digits", 1)


def test_factor_must_divide_the_image_size(digits):
    cfg = resolve_config("idc", "quick", "digits", 1, {"factor": 3})
    with pytest.raises(ConfigError, match="factor"):
        GradientMatching(cfg, DistillContext(digits, 1))


def test_idc_learning_rate_scales_with_ipc(digits):
    cfg = resolve_config("idc", "quick", "digits", 2, {**TINY, "iterations": 1, "factor": 2})
    matcher = GradientMatching(cfg, DistillContext(digits, 2))
    seen = []
    original = torch.optim.SGD.__init__

    def spy(self, params, lr, **kw):
        seen.append(lr)
        original(self, params, lr=lr, **kw)

    torch.optim.SGD.__init__ = spy
    try:
        syn = SyntheticSet.from_real(digits, initial_indices(DistillContext(digits, 2), 2, 2), 2)
        matcher.distill_segment(syn.images, syn.labels, matcher.full_pool, 1, 2, generator(0, "t"))
    finally:
        torch.optim.SGD.__init__ = original
    assert seen[0] == pytest.approx(cfg.lr_img * 2 / 10)


def test_matched_set_beats_noise_on_digits(digits):
    """From the same noise, a short DC distillation must train a far better classifier."""
    cfg = resolve_config(
        "dc",
        "quick",
        "digits",
        1,
        {
            "init": "noise",
            "iterations": 30,
            "match_steps": 1,
            "net_epochs": 1,
            "model_options": {"width": 32},
        },
    )
    ctx = DistillContext(digits, 1, seed=0)
    result = METHODS.get("dc").run(ctx, cfg)
    proto = dataclasses.replace(
        PROTOCOLS.get("dc-quick"),
        train=dataclasses.replace(PROTOCOLS.get("dc-quick").train, epochs=100),
    )
    syn = result.synthetic
    noise = evaluate_images(result.initial_images, syn.labels, digits, proto, repeats=2)
    matched = evaluate_images(syn.images, syn.labels, digits, proto, repeats=2)
    assert matched.mean > noise.mean + 0.2, (matched.test_accs, noise.test_accs)
