"""EDD: equal to its base with one segment, filtering, frozen segments, the regulariser."""

import pytest
import torch

from exdistill.data import load_dataset
from exdistill.errors import ConfigError
from exdistill.methods import METHODS, DistillContext, resolve_config
from exdistill.methods.edd import (
    EDDConfig,
    default_segments,
    resolve_segments,
    split_budget,
)
from exdistill.methods.filtering import FilterOutcome, forgotten, select_pool
from exdistill.methods.gradient import GradientMatching
from exdistill.methods.segment import initial_indices
from exdistill.seeding import generator
from exdistill.synthetic import SyntheticSet

BASE = {"iterations": 4, "match_steps": 2, "model_options": {"width": 16}}
FILTER = {"epochs": 5, "max_steps": 20}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _edd(digits, ipc, seed=0, **overrides):
    cfg = resolve_config(
        "edd", "quick", "digits", ipc, {"base_config": BASE, "filter": FILTER, **overrides}
    )
    return METHODS.get("edd").run(DistillContext(digits, ipc, seed), cfg)


def test_default_segments_follow_the_design():
    assert default_segments(1) == (1,)
    assert default_segments(10) == (5, 5)
    assert default_segments(3) == (2, 1)
    assert default_segments(50) == (10,) * 5
    assert default_segments(25) == (10, 10, 5)


def test_segments_must_sum_to_ipc():
    with pytest.raises(ConfigError, match="sum to 3, not ipc 4"):
        resolve_segments(EDDConfig(segments=(1, 2)), 4)
    assert resolve_segments(EDDConfig(segment_ipc=3), 7) == (3, 3, 1)


def test_budget_split_is_exact_and_proportional():
    assert split_budget(30, (5, 5)) == [15, 15]
    assert sum(split_budget(31, (10, 10, 5))) == 31
    assert split_budget(100, (10, 10, 10, 10, 10)) == [20] * 5


def test_one_segment_equals_the_base_exactly(digits):
    edd = _edd(digits, 2, segments=(2,)).synthetic
    base_cfg = resolve_config("idc", "quick", "digits", 2, BASE)
    base = METHODS.get("idc").run(DistillContext(digits, 2, 0), base_cfg).synthetic
    assert torch.equal(edd.images, base.images)
    assert torch.equal(edd.labels, base.labels)


def test_union_of_segment_starts_is_the_base_start(digits):
    result = _edd(digits, 2)
    base_cfg = resolve_config("idc", "quick", "digits", 2, BASE)
    base = METHODS.get("idc").run(DistillContext(digits, 2, 0), base_cfg)

    def by_class(images, labels):
        return sorted(
            (int(lab), img.flatten().tolist()) for img, lab in zip(images, labels, strict=True)
        )

    assert by_class(result.initial_images, result.synthetic.labels) == by_class(
        base.initial_images, base.synthetic.labels
    )


def test_initial_images_pair_with_the_final_images_one_to_one(digits):
    """Image i of the start is where image i of the result began (update similarity needs it):
    with a vanishing image learning rate the result is its start, position by position."""
    base = {**BASE, "lr_img": 1e-12}
    result = _edd(digits, 4, segments=(2, 2), base_config=base)
    syn = result.synthetic
    assert syn.segments.tolist() != sorted(syn.segments.tolist())  # classes interleave segments
    assert torch.allclose(result.initial_images, syn.images, atol=1e-6)


def test_records_per_segment(digits):
    result = _edd(digits, 2)
    segs = result.records["segments"]
    assert [s["segment"] for s in segs] == [0, 1]
    assert [s["cumulative_ipc"] for s in segs] == [1, 2]
    assert sum(s["iterations"] for s in segs) == BASE["iterations"]
    assert segs[0]["forgotten"] is None and isinstance(segs[1]["forgotten"], int)
    assert all(0 <= s["filter_val_acc"] <= 1 for s in segs)
    assert segs[0]["real_per_class"] == [len(i) for i in digits.class_indices("train")]
    # Segment 1 is distilled against a filtered pool, no smaller than the real batch.
    assert all(
        64 <= n <= full
        for n, full in zip(segs[1]["real_per_class"], segs[0]["real_per_class"], strict=True)
    )
    syn = result.synthetic
    assert torch.equal(torch.bincount(syn.segments), torch.tensor([10, 10]))


def test_segment_evals_are_an_analysis_that_can_be_turned_off(digits):
    calls = []

    def evaluate(syn):
        calls.append(len(syn.labels))
        return {"test_acc_mean": 0.5}

    def run(**overrides):
        cfg = resolve_config(
            "edd", "quick", "digits", 2, {"base_config": BASE, "filter": FILTER, **overrides}
        )
        ctx = DistillContext(digits, 2, 0, evaluate=evaluate)
        return METHODS.get("edd").run(ctx, cfg)

    on = run()
    assert calls == [10]  # the union after segment 0, not after the last one
    assert on.records["segments"][0]["eval"] == {"test_acc_mean": 0.5}
    off = run(segment_evals=False)
    assert calls == [10]
    assert all("eval" not in s for s in off.records["segments"])
    assert torch.equal(on.synthetic.images, off.synthetic.images)


def test_earlier_segments_stay_frozen(digits, monkeypatch):
    seen = []
    original = GradientMatching.distill_segment

    def spy(self, images, labels, *args, **kwargs):
        out = original(self, images, labels, *args, **kwargs)
        seen.append((out.clone(), labels.clone(), kwargs.get("frozen")))
        return out

    monkeypatch.setattr(GradientMatching, "distill_segment", spy)
    syn = _edd(digits, 2).synthetic
    first, _, _ = seen[0]
    _, _, frozen = seen[1]
    assert torch.equal(frozen[0], first)  # segment 1 saw segment 0 exactly as it ended
    assert torch.equal(syn.images[syn.segments == 0], first)


@pytest.mark.parametrize("lr_ipc, expected", [("segment", [3, 1]), ("total", [4, 4])])
def test_image_learning_rate_follows_the_segment_ipc_unless_told_total(
    digits, monkeypatch, lr_ipc, expected
):
    seen = []
    original = GradientMatching.distill_segment

    def spy(self, images, labels, pools, iterations, ipc, *args, **kwargs):
        seen.append(ipc)
        return original(self, images, labels, pools, iterations, ipc, *args, **kwargs)

    monkeypatch.setattr(GradientMatching, "distill_segment", spy)
    _edd(digits, 4, segments=(3, 1), lr_ipc=lr_ipc, segment_evals=False)
    assert seen == expected


def _matcher(digits, ipc=1):
    ctx = DistillContext(digits, ipc, 0)
    cfg = resolve_config("idc", "quick", "digits", ipc, BASE)
    return GradientMatching(cfg, ctx), SyntheticSet.from_real(
        digits, initial_indices(ctx, ipc, cfg.factor), cfg.factor
    )


def test_regulariser_is_zero_when_lambda_is_zero(digits):
    matcher, seg = _matcher(digits)
    frozen = (seg.images + 0.1, seg.labels)
    args = (seg.images, seg.labels, matcher.full_pool, 2, 1)
    with_frozen = matcher.distill_segment(*args, generator(0, "x"), frozen=frozen, reg_weight=0)
    without = matcher.distill_segment(*args, generator(0, "x"))
    assert torch.equal(with_frozen, without)
    changed = matcher.distill_segment(*args, generator(0, "x"), frozen=frozen, reg_weight=1.0)
    assert not torch.equal(changed, without)


def test_regulariser_has_gradients_only_on_the_current_segment(digits):
    matcher, seg = _matcher(digits)
    frozen_images = (seg.images + 0.1).requires_grad_(True)
    before = frozen_images.detach().clone()
    matcher.distill_segment(
        seg.images,
        seg.labels,
        matcher.full_pool,
        2,
        1,
        generator(0, "y"),
        frozen=(frozen_images, seg.labels),
        reg_weight=1.0,
    )
    assert frozen_images.grad is None
    assert torch.equal(frozen_images.detach(), before)


def _outcome(correct, confidence):
    return FilterOutcome(torch.tensor(correct), torch.tensor(confidence))


def test_filter_keeps_every_misclassified_image_and_drops_confident_ones():
    # class 0 = indices 0..9; 2 wrong (3, 7), 8 right with confidence rising with the index
    correct = [i not in (3, 7) for i in range(10)]
    conf = [i / 10 for i in range(10)]
    pools = select_pool(
        [torch.arange(10)],
        _outcome(correct, conf),
        drop=0.5,
        drop_order="confident",
        min_per_class=0,
        generator=torch.Generator().manual_seed(0),
    )
    # 8 correct, drop the 4 most confident (9, 8, 6, 5): keep 0, 1, 2, 4 + wrong 3, 7
    assert pools[0].tolist() == [0, 1, 2, 3, 4, 7]


def test_filter_respects_min_per_class_and_random_order():
    correct = [True] * 10
    conf = [0.9] * 10
    gen = torch.Generator().manual_seed(0)
    pools = select_pool(
        [torch.arange(10)],
        _outcome(correct, conf),
        drop=0.9,
        drop_order="random",
        min_per_class=6,
        generator=gen,
    )
    assert len(pools[0]) == 6
    pools = select_pool(
        [torch.arange(10), torch.arange(10, 13)],
        _outcome([False] * 13, [0.1] * 13),
        drop=0.9,
        drop_order="confident",
        min_per_class=6,
        generator=gen,
    )
    assert pools[0].tolist() == list(range(10)) and pools[1].tolist() == [10, 11, 12]


def test_forgotten_counts_right_then_wrong():
    prev = _outcome([True, True, False, False], [0.5] * 4)
    cur = _outcome([True, False, True, False], [0.5] * 4)
    assert forgotten(prev, cur) == 1
    assert forgotten(None, cur) is None


def test_edd_rejects_bad_configs():
    with pytest.raises(ConfigError, match="drop"):
        resolve_config("edd", "quick", "digits", 2, {"drop": 1.5})
    with pytest.raises(ConfigError, match="cannot wrap"):
        resolve_config("edd", "quick", "digits", 2, {"base": "random"})
    with pytest.raises(ConfigError, match="unknown config key"):
        resolve_config("edd", "quick", "digits", 2, {"base_config": {"bogus": 1}})


def test_edd_base_preset_follows_the_chosen_base():
    dc = resolve_config("edd", "quick", "digits", 10, {"base": "dc"})
    assert dc.base == "dc" and dc.base_config["distance"] == "dc"
    idc = resolve_config("edd", "quick", "digits", 10)
    assert idc.base == "idc" and "distance" not in idc.base_config
