"""DM (distribution matching), EDD over DM, and herding selection."""

import dataclasses
from pathlib import Path

import pytest
import torch

from exdistill.augment import Augment
from exdistill.checkpoint import Checkpointer
from exdistill.data import load_dataset
from exdistill.errors import ConfigError, NumericalError
from exdistill.evaluation import PROTOCOLS, evaluate_images
from exdistill.methods import METHODS, DistillContext, resolve_config
from exdistill.methods.dm import (
    DistributionMatching,
    dm_loss_and_backward,
    embedding_distance,
)
from exdistill.methods.gradient import DSA_STRATEGY
from exdistill.methods.herding import herd
from exdistill.methods.matching import ClassBatch
from exdistill.methods.segment import initial_indices
from exdistill.models import QUICK_WIDTH
from exdistill.pipeline import RunConfig, distill
from exdistill.seeding import generator
from exdistill.synthetic import SyntheticSet

# A few iterations of a width-16 ConvNet: ≈ 10 ms an iteration on digits.
TINY = {"iterations": 4, "batch_real": 32, "model_options": {"width": 16}}
FILTER = {"epochs": 5, "max_steps": 20}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _dm(digits, ipc=1, seed=0, checkpoint=None, **overrides):
    cfg = resolve_config("dm", "quick", "digits", ipc, {**TINY, **overrides})
    return METHODS.get("dm").run(DistillContext(digits, ipc, seed, checkpoint=checkpoint), cfg)


def _matcher(digits, ipc=1, **overrides):
    ctx = DistillContext(digits, ipc, 0)
    cfg = resolve_config("dm", "quick", "digits", ipc, {**TINY, **overrides})
    syn = SyntheticSet.from_real(digits, initial_indices(ctx, ipc, cfg.factor), cfg.factor)
    return DistributionMatching(cfg, ctx), syn


# ----------------------------------------------------------------------------- the DM loss
def test_dm_loss_is_exactly_zero_when_the_synthetic_batch_is_the_real_batch(digits):
    matcher, _ = _matcher(digits)
    net = matcher.new_network(generator(0, "net"))
    real = matcher.real_batch(matcher.full_pool[3], generator(0, "real"))
    augment = Augment(DSA_STRATEGY, mode="single")
    for draw in range(4):  # several augmentation draws, each shared by both batches
        syn = real.clone().requires_grad_(True)
        loss = embedding_distance(net, real, syn, augment, generator(draw, "aug"))
        assert loss.item() == 0.0
    other = real.flip(0)[:5].clone().requires_grad_(True)
    assert embedding_distance(net, real, other, None, generator(0)).item() > 0


def test_one_dm_step_lowers_the_loss_on_a_fixed_network(digits):
    matcher, syn = _matcher(digits, ipc=2)
    net = matcher.new_network(generator(0, "net"))
    reals = [matcher.real_batch(matcher.full_pool[c], generator(c, "r")) for c in range(10)]
    images = syn.images.clone().requires_grad_(True)

    def loss_and_grad():
        images.grad = None

        def make_batches(chunk):
            return [ClassBatch(c, reals[c], images[syn.labels == c]) for c in chunk]

        return dm_loss_and_backward(net, make_batches, range(10), None, generator(0), 0, [images])

    before = loss_and_grad()
    with torch.no_grad():
        images -= 1.0 * images.grad  # the paper's lr_img, one plain step
    after = loss_and_grad()
    assert 0 < after < before, (before, after)


def test_class_chunks_give_the_same_gradient(digits):
    matcher, syn = _matcher(digits, ipc=1)
    net = matcher.new_network(generator(0, "net"))
    reals = [matcher.real_batch(matcher.full_pool[c], generator(c, "r")) for c in range(10)]
    grads, losses = [], []
    for chunk in (0, 3):
        images = syn.images.clone().requires_grad_(True)

        def make_batches(cs, images=images):
            return [ClassBatch(c, reals[c], images[syn.labels == c]) for c in cs]

        losses.append(
            dm_loss_and_backward(net, make_batches, range(10), None, None, chunk, [images])
        )
        grads.append(images.grad)
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    assert torch.allclose(grads[0], grads[1], atol=1e-7)


# ----------------------------------------------------------------------------- DM the method
def test_dm_same_seed_same_synthetic_set(digits):
    a = _dm(digits, seed=3)
    b = _dm(digits, seed=3)
    c = _dm(digits, seed=4)
    assert torch.equal(a.synthetic.images, b.synthetic.images)
    assert not torch.equal(a.synthetic.images, c.synthetic.images)
    assert not torch.equal(a.synthetic.images, a.initial_images)  # it did move
    assert torch.equal(a.synthetic.labels, torch.arange(10))


def test_dm_starts_from_the_gradient_methods_initial_set(digits):
    dm = _dm(digits, ipc=2)
    idc_cfg = resolve_config("idc", "quick", "digits", 2, {"iterations": 1, "match_steps": 1})
    idc = METHODS.get("idc").run(DistillContext(digits, 2, 0), idc_cfg)
    assert torch.equal(dm.initial_images, idc.initial_images)


def test_dm_bad_configs_are_rejected(digits):
    for bad, match in (
        ({"iterations": 0}, "iterations"),
        ({"batch_real": 0}, "batch_real"),
        ({"lr_img": -1.0}, "lr_img"),
        ({"momentum_img": 1.0}, "momentum_img"),
        ({"checkpoint_every": -1}, "checkpoint_every"),
        ({"log_every": 0}, "log_every"),
        ({"augment": "color_bogus"}, "bogus"),
        ({"init": "zeros"}, "init"),
        ({"bogus": 1}, "unknown config key 'bogus'"),
    ):
        with pytest.raises(ConfigError, match=match):
            resolve_config("dm", "quick", "digits", 1, bad)
    cfg = resolve_config("dm", "quick", "digits", 1, {"factor": 3})
    with pytest.raises(ConfigError, match="factor"):
        DistributionMatching(cfg, DistillContext(digits, 1))


def test_dm_presets():
    paper = resolve_config("dm", "paper", "cifar10", 10)
    assert (paper.iterations, paper.batch_real, paper.lr_img, paper.momentum_img) == (
        20000,
        256,
        1.0,
        0.5,
    )
    assert paper.init == "real" and paper.augment == DSA_STRATEGY and paper.factor == 1
    quick = resolve_config("dm", "quick", "cifar10", 10)
    assert quick.model_options == {"width": QUICK_WIDTH} and quick.iterations < paper.iterations
    assert METHODS.get("dm").protocol == "dsa" and not METHODS.get("dm").selects_real


def test_dm_multi_formation_decodes_factor_squared_images(digits):
    syn = _dm(digits, ipc=1, factor=2).synthetic
    images, labels = syn.decoded()
    assert syn.factor == 2 and images.shape == (40, 1, 8, 8) and labels.shape == (40,)


def test_dm_clamp_keeps_images_in_range(digits):
    syn = _dm(digits, clamp=True, lr_img=1000.0).synthetic
    low, high = digits.valid_range()
    assert (syn.images >= low - 1e-6).all() and (syn.images <= high + 1e-6).all()


def test_dm_nan_names_the_step(digits):
    with pytest.raises(NumericalError, match=r"segment 0, iteration \d"):
        _dm(digits, lr_img=1e38, iterations=6)


def test_dm_progress_and_log_records(digits):
    class Bar:
        n = 0

        def update(self, k=1):
            Bar.n += k

        def set_postfix_str(self, s="", refresh=True):
            pass

    records = []
    cfg = resolve_config("dm", "quick", "digits", 1, {**TINY, "iterations": 5, "log_every": 2})
    ctx = DistillContext(digits, 1, 0, progress=Bar(), log=records.append)
    METHODS.get("dm").run(ctx, cfg)
    assert Bar.n == METHODS.get("dm").steps(cfg, ctx) == 5
    assert [r["iteration"] for r in records] == [1, 3, 4]
    assert all(r["match_loss"] > 0 for r in records)


def test_dm_from_noise_beats_noise(digits):
    """From the same noise, a short DM distillation must train a far better classifier."""
    result = _dm(digits, init="noise", iterations=40, batch_real=64, model_options={"width": 32})
    proto = PROTOCOLS.get("dc-quick")
    proto = dataclasses.replace(proto, train=dataclasses.replace(proto.train, epochs=100))
    syn = result.synthetic
    noise = evaluate_images(result.initial_images, syn.labels, digits, proto, repeats=2)
    matched = evaluate_images(syn.images, syn.labels, digits, proto, repeats=2)
    assert matched.mean > noise.mean + 0.2, (matched.test_accs, noise.test_accs)


class Killed(Exception):
    pass


class DiesAfter(Checkpointer):
    """A checkpointer that kills the run after ``n`` saves (the save itself completes)."""

    def __init__(self, directory, n):
        super().__init__(directory)
        self.n = n

    def save(self, state, meta) -> None:
        super().save(state, meta)
        self.n -= 1
        if self.n == 0:
            raise Killed


def test_dm_resume_after_a_checkpoint_is_bitwise(digits, tmp_path: Path):
    over = {"iterations": 6, "checkpoint_every": 2}
    with pytest.raises(Killed):
        _dm(digits, ipc=2, checkpoint=DiesAfter(tmp_path / "a", 2), **over)
    meta = Checkpointer(tmp_path / "a").load().meta
    assert (meta["method"], meta["iteration"]) == ("dm", 4)
    resumed = _dm(digits, ipc=2, checkpoint=Checkpointer(tmp_path / "a"), **over)
    straight = _dm(digits, ipc=2, **over)
    assert torch.equal(resumed.synthetic.images, straight.synthetic.images)
    assert torch.equal(resumed.initial_images, straight.initial_images)


def test_dm_runs_end_to_end_through_the_pipeline(digits, tmp_path: Path):
    run = RunConfig(method="dm", ipc=1, repeats=1, baselines=False, protocol="dc-quick")
    outcome = distill(run, TINY, tmp_path / "run")
    assert (tmp_path / "run" / "synthetic" / "synthetic.safetensors").is_file()
    assert 0 <= outcome.metrics["test_acc_mean"] <= 1
    assert "update_similarity" in outcome.metrics  # DM optimises: its updates are analysed


# ----------------------------------------------------------------------------- EDD over DM
def _edd_dm(digits, ipc, **overrides):
    cfg = resolve_config(
        "edd",
        "quick",
        "digits",
        ipc,
        {"base": "dm", "base_config": TINY, "filter": FILTER, **overrides},
    )
    return METHODS.get("edd").run(DistillContext(digits, ipc, 0), cfg)


def test_edd_preset_follows_dm():
    cfg = resolve_config("edd", "quick", "digits", 10, {"base": "dm"})
    assert cfg.base == "dm" and cfg.base_config["batch_real"] == 64
    assert cfg.filter.augment_mode == PROTOCOLS.get("dsa-quick").train.augment_mode


def test_edd_over_dm_with_one_segment_equals_dm(digits):
    edd = _edd_dm(digits, 2, segments=(2,)).synthetic
    dm = _dm(digits, ipc=2).synthetic
    assert torch.equal(edd.images, dm.images) and torch.equal(edd.labels, dm.labels)


def test_edd_over_dm_runs_two_segments(digits):
    result = _edd_dm(digits, 2, min_per_class=10)
    segs = result.records["segments"]
    assert [s["segment"] for s in segs] == [0, 1]
    assert sum(s["iterations"] for s in segs) == TINY["iterations"]
    full = [len(i) for i in digits.class_indices("train")]
    assert segs[0]["real_per_class"] == full
    assert all(10 <= n <= f for n, f in zip(segs[1]["real_per_class"], full, strict=True))
    assert sum(segs[1]["real_per_class"]) < sum(full)  # the filter dropped some easy images
    assert torch.equal(torch.bincount(result.synthetic.segments), torch.tensor([10, 10]))


def test_edd_over_dm_resumes_bitwise_inside_the_second_segment(digits, tmp_path: Path):
    over = {
        "base": "dm",
        "segments": (1, 1),
        "base_config": {**TINY, "checkpoint_every": 1},
        "filter": FILTER,
        "filter_model_options": {"width": 16},
    }
    cfg = resolve_config("edd", "quick", "digits", 2, over)

    def run(ckpt):
        return METHODS.get("edd").run(DistillContext(digits, 2, 0, checkpoint=ckpt), cfg)

    with pytest.raises(Killed):  # saves: segment 0 after 1 and 2, its boundary, segment 1 after 1
        run(DiesAfter(tmp_path / "a", 4))
    meta = Checkpointer(tmp_path / "a").load().meta
    assert (meta["segment"], meta["iteration"]) == (1, 1)
    resumed, straight = run(Checkpointer(tmp_path / "a")), run(None)
    assert torch.equal(resumed.synthetic.images, straight.synthetic.images)
    assert resumed.records == straight.records


def test_dm_regulariser_is_zero_with_lambda_zero_and_moves_only_the_current_segment(digits):
    matcher, seg = _matcher(digits)
    frozen_images = (seg.images + 0.1).requires_grad_(True)
    before = frozen_images.detach().clone()
    frozen = (frozen_images, seg.labels)
    args = (seg.images, seg.labels, matcher.full_pool, 2, 1)
    plain = matcher.distill_segment(*args, generator(0, "x"))
    with_zero = matcher.distill_segment(*args, generator(0, "x"), frozen=frozen, reg_weight=0.0)
    assert torch.equal(with_zero, plain)
    with_reg = matcher.distill_segment(*args, generator(0, "x"), frozen=frozen, reg_weight=1.0)
    assert not torch.equal(with_reg, plain)
    assert frozen_images.grad is None and torch.equal(frozen_images.detach(), before)


def test_dm_regulariser_matches_the_union_against_full_data(digits, monkeypatch):
    """With λ > 0 each class gets a second term: frozen ∪ current, weight λ, full real pool."""
    matcher, seg = _matcher(digits)
    seen = []
    original = embedding_distance

    def spy(model, real, syn, augment, gen, aug=None):
        seen.append((real.shape[0], syn.shape[0]))
        return original(model, real, syn, augment, gen, aug)

    monkeypatch.setattr("exdistill.methods.dm.embedding_distance", spy)
    tiny_pools = [p[:5] for p in matcher.full_pool]
    frozen = (torch.cat([seg.images, seg.images]), torch.cat([seg.labels, seg.labels]))
    matcher.distill_segment(seg.images, seg.labels, tiny_pools, 1, 1, generator(0), frozen, 0.5)
    assert seen[0::2] == [(5, 1)] * 10  # current segment against its (filtered) pool
    assert seen[1::2] == [(32, 3)] * 10  # 2 frozen + 1 current against the full data


# ----------------------------------------------------------------------------- herding
def test_herding_picks_the_image_nearest_the_mean_first_and_never_repeats():
    # Mean of these rows is (1, 1); row 2 sits on it, rows 0/1 and 3/4 are symmetric pairs.
    feats = torch.tensor([[0.0, 0.0], [2.0, 2.0], [1.0, 1.0], [0.0, 2.0], [2.0, 0.0]])
    order = herd(feats, 5).tolist()
    assert order[0] == 2
    assert sorted(order) == [0, 1, 2, 3, 4]
    # Step 2: the four other rows are equally good (ties go to the lowest index, 0); step 3
    # then needs (2, 2) to bring the running mean back to (1, 1).
    assert order[:3] == [2, 0, 1]
    duplicates = torch.tensor([[1.0], [1.0], [1.0], [9.0]])
    picks = herd(duplicates, 3).tolist()
    assert len(set(picks)) == 3


def test_herding_tracks_the_mean_better_than_random():
    gen = torch.Generator().manual_seed(0)
    feats = torch.randn(300, 8, generator=gen) * torch.linspace(0.5, 3, 8)
    mean = feats.mean(0)
    herded = (feats[herd(feats, 10)].mean(0) - mean).norm()
    random = [
        (feats[torch.randperm(300, generator=gen)[:10]].mean(0) - mean).norm() for _ in range(50)
    ]
    assert herded < min(random)


def test_herding_runs_end_to_end_on_digits(digits, tmp_path: Path):
    over = {"train": {"max_steps": 20}, "model_options": {"width": 16}}
    run = RunConfig(method="herding", ipc=2, repeats=1, baselines=False, protocol="dc-quick")
    outcome = distill(run, over, tmp_path / "run")
    syn = outcome.synthetic
    assert torch.equal(syn.labels, torch.arange(10).repeat_interleave(2))
    picks = outcome.metrics["herding"]["indices"]
    assert all(len(set(p)) == 2 for p in picks)
    real = SyntheticSet.from_real(digits, [torch.tensor(p) for p in picks])
    assert torch.equal(syn.images, real.images)  # the stored images are those real images
    assert "update_similarity" not in outcome.metrics  # nothing optimised: nothing to compare
    assert METHODS.get("herding").selects_real and METHODS.get("random").selects_real
    assert METHODS.get("herding").distiller is None
    quick = resolve_config("herding", "quick", "digits", 10)
    assert quick.train.total_steps(len(digits.train)) == 300
    with pytest.raises(ConfigError, match="cannot wrap"):
        resolve_config("edd", "quick", "digits", 2, {"base": "herding"})


def test_dm_result_does_not_depend_on_the_class_chunk(digits):
    """Every draw of an iteration happens before any chunk is computed (augmentation on)."""
    images = []
    for chunk in (0, 1, 3):
        cfg = resolve_config("dm", "quick", "digits", 2, {"iterations": 2, "class_chunk": chunk})
        assert cfg.augment
        images.append(METHODS.get("dm").run(DistillContext(digits, 2, 0), cfg).synthetic.images)
    assert torch.equal(images[0], images[1]) and torch.equal(images[0], images[2])
