import math

import pytest
import torch

from exdistill.augment import OPS, Augment, AugmentParams, cutmix
from exdistill.errors import ConfigError

SIZES = [(1, 8), (3, 8), (1, 32), (3, 32)]  # (channels, side)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(n: int = 6, c: int = 3, side: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, c, side, side, generator=gen(seed + 1000))


# ---- every registered op --------------------------------------------------------------------


@pytest.mark.parametrize("op", OPS.names())
@pytest.mark.parametrize("c,side", SIZES)
def test_op_keeps_shape_changes_image_and_passes_gradient(op: str, c: int, side: int) -> None:
    aug = Augment(op)
    x = images(16, c, side).requires_grad_()
    params = aug.sample(16, (side, side), gen(3))
    out = aug.apply(x, params)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert not torch.equal(out, x), f"{op} left the batch unchanged"
    weights = torch.randn(out.shape, generator=gen(7))
    (out * weights).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize("op", OPS.names())
def test_op_replay_is_bitwise_and_broadcasts(op: str) -> None:
    aug = Augment(op)
    a, b = images(5, 3, 8, seed=1), images(3, 3, 8, seed=2)
    params = aug.sample(1, (8, 8), gen(4), per_sample=False)
    assert torch.equal(aug.apply(a, params), aug.apply(a.clone(), params))
    together = aug.apply(torch.cat([a, b]), params)
    torch.testing.assert_close(together, torch.cat([aug.apply(a, params), aug.apply(b, params)]))


# ---- the pipeline ---------------------------------------------------------------------------


def test_same_seed_same_params_and_output() -> None:
    aug = Augment()
    p1, p2 = aug.sample(6, (8, 8), gen(5)), aug.sample(6, (8, 8), gen(5))
    assert list(p1.ops) == list(p2.ops) == list(aug.names)
    for name in p1.ops:
        for key in p1.ops[name]:
            assert torch.equal(p1.ops[name][key], p2.ops[name][key])
            assert p1.ops[name][key].shape[0] == 6
    x = images()
    assert torch.equal(aug(x, gen(5)), aug(x.clone(), gen(5)))
    assert not torch.equal(aug(x, gen(5)), aug(x, gen(6)))


def test_library_does_not_touch_global_rng() -> None:
    state = torch.get_rng_state()
    Augment()(images(), gen(0))
    cutmix(images(), torch.arange(6), gen(0), prob=1.0)
    assert torch.equal(state, torch.get_rng_state())


def test_siamese_applies_one_transform_to_batches_of_different_sizes() -> None:
    aug = Augment()
    real, syn = images(7, 3, 32, seed=1), images(2, 3, 32, seed=2)
    out_real, out_syn = aug.siamese([real, syn], gen(8))
    params = aug.sample(1, (32, 32), gen(8), per_sample=False)
    assert params.batch_size == 1
    assert all(v.shape[0] == 1 for p in params.ops.values() for v in p.values())
    assert torch.equal(out_real, aug.apply(real, params))
    assert torch.equal(out_syn, aug.apply(syn, params))
    both = aug.apply(torch.cat([real, syn]), params)
    torch.testing.assert_close(both, torch.cat([out_real, out_syn]), rtol=1e-6, atol=1e-6)
    # the same image in both batches comes out the same
    twin = aug.siamese([real, real[:1]], gen(8))
    assert torch.equal(twin[0][:1], twin[1])


def test_siamese_gradient_reaches_synthetic_images() -> None:
    real, syn = images(4), images(2, seed=3).requires_grad_()
    out_real, out_syn = Augment().siamese([real, syn], gen(2))
    ((out_syn.mean(0) - out_real.mean(0)) ** 2).sum().backward()
    assert syn.grad is not None and syn.grad.abs().sum() > 0


def test_apply_rejects_mismatched_batch_and_size() -> None:
    aug = Augment()
    params = aug.sample(4, (8, 8), gen())
    with pytest.raises(ValueError, match="batch of 4"):
        aug.apply(images(3), params)
    with pytest.raises(ValueError, match="size"):
        aug.apply(torch.randn(4, 3, 16, 16), params)
    with pytest.raises(ValueError):
        aug.apply(torch.randn(3, 8, 8), params)


def test_params_to_device_copies() -> None:
    params = Augment().sample(2, (8, 8), gen())
    moved = params.to("cpu")
    assert isinstance(moved, AugmentParams) and moved.ops is not params.ops
    assert moved.image_size == (8, 8) and moved.batch_size == 2


def test_modes_choose_ops_like_the_official_code() -> None:
    full = "color_crop_cutout_flip_scale_rotate"
    single = Augment(full, mode="single")
    seen = set()
    for seed in range(30):
        ops = list(single.sample(2, (8, 8), gen(seed)).ops)
        assert len(ops) == 1
        seen.update(ops)
    assert seen == set(single.names)
    idc = Augment(full, mode="idc")
    for seed in range(10):
        ops = list(idc.sample(2, (8, 8), gen(seed)).ops)
        assert ops[:2] == ["flip", "color"] and ops[-1] == "cutout"
        assert len(ops) == 4 and ops[2] in {"crop", "scale", "rotate"}
    assert list(Augment("color_crop_cutout", mode="idc").sample(1, (8, 8), gen()).ops) == [
        "color",
        "crop",
        "cutout",
    ]


def test_empty_strategy_is_identity() -> None:
    x = images()
    for strategy in ("", "none"):
        assert torch.equal(Augment(strategy)(x, gen()), x)


def test_bad_config_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown augmentation op 'blur'"):
        Augment("color_blur")
    with pytest.raises(ConfigError):
        Augment("crop_crop")
    with pytest.raises(ConfigError):
        Augment(mode="sometimes")
    with pytest.raises(ConfigError):
        Augment(zoom=2.0)
    with pytest.raises(ConfigError):
        Augment(flip=1.5)


# ---- what each op does ----------------------------------------------------------------------


def one(op: str, **p: torch.Tensor) -> AugmentParams:
    return AugmentParams(ops={op: p}, image_size=(8, 8), batch_size=next(iter(p.values())).shape[0])


def test_flip_param_flips() -> None:
    x = images(2)
    out = Augment("flip").apply(x, one("flip", flip=torch.tensor([True, False])))
    assert torch.equal(out[0], x[0].flip(-1)) and torch.equal(out[1], x[1])


def test_cutout_zeroes_the_box_only() -> None:
    aug = Augment("cutout")
    x = images(8, 3, 8) + 10  # no zeros anywhere
    params = aug.sample(8, (8, 8), gen(1))
    out = aug.apply(x, params)
    for i, (top, left, bottom, right) in enumerate(params.ops["cutout"]["box"].tolist()):
        assert 0 <= top <= bottom <= 8 and 0 <= left <= right <= 8
        assert bottom - top <= 4 and right - left <= 4
        region = torch.zeros(8, 8, dtype=torch.bool)
        region[top:bottom, left:right] = True
        assert (out[i][:, region] == 0).all()
        assert torch.equal(out[i][:, ~region], x[i][:, ~region])


def test_crop_shifts_with_zero_padding() -> None:
    x = images(1)
    out = Augment("crop").apply(x, one("crop", shift=torch.tensor([[1, -2]])))
    expected = torch.zeros_like(x)
    expected[..., :-1, 2:] = x[..., 1:, :-2]  # out[i, j] = x[i + 1, j - 2]
    assert torch.equal(out, expected)


def test_crop_shift_range() -> None:
    shifts = Augment("crop").sample(500, (32, 32), gen()).ops["crop"]["shift"]
    assert shifts.min() == -4 and shifts.max() == 4  # round(0.125 * 32)


def test_identity_parameters_give_identity() -> None:
    x = images(2)
    aug = Augment("color_crop_flip_scale_rotate")
    params = AugmentParams(
        ops={
            "color": {
                "brightness": torch.zeros(1),
                "saturation": torch.ones(1),
                "contrast": torch.ones(1),
            },
            "crop": {"shift": torch.zeros(1, 2, dtype=torch.long)},
            "flip": {"flip": torch.zeros(1, dtype=torch.bool)},
            "scale": {"factor": torch.ones(1, 2)},
            "rotate": {"angle": torch.zeros(1)},
        },
        image_size=(8, 8),
        batch_size=1,
    )
    torch.testing.assert_close(aug.apply(x, params), x, rtol=1e-5, atol=1e-5)


def test_color_factors() -> None:
    x = images(2)
    out = Augment("color").apply(
        x,
        one(
            "color",
            brightness=torch.tensor([0.25]),
            saturation=torch.tensor([0.0]),
            contrast=torch.tensor([1.0]),
        ),
    )
    gray = (x + 0.25).mean(1, keepdim=True).expand_as(x)  # saturation 0 → channel mean
    torch.testing.assert_close(out, gray)
    x1 = images(2, c=1)  # saturation is the identity for one channel
    out1 = Augment("color").apply(
        x1,
        one("color", brightness=torch.zeros(1), saturation=torch.zeros(1), contrast=torch.ones(1)),
    )
    torch.testing.assert_close(out1, x1)


def test_rotate_quarter_turn_and_scale_samples_in_range() -> None:
    x = images(1, 1, 8)
    out = Augment("rotate").apply(x, one("rotate", angle=torch.tensor([math.pi / 2])))
    torch.testing.assert_close(out, torch.rot90(x, k=1, dims=(2, 3)), rtol=1e-4, atol=1e-4)
    sample = Augment("scale_rotate").sample(1000, (8, 8), gen())
    factor, angle = sample.ops["scale"]["factor"], sample.ops["rotate"]["angle"]
    assert factor.min() >= 1 / 1.2 and factor.max() <= 1.2
    assert not torch.equal(factor[:, 0], factor[:, 1])  # x and y drawn independently
    assert angle.abs().max() <= math.radians(15) + 1e-6


# ---- CutMix ---------------------------------------------------------------------------------


def test_cutmix_prob_zero_returns_inputs() -> None:
    x, y = images(), torch.arange(6)
    mixed, y_a, y_b, lam = cutmix(x, y, gen(), prob=0.0)
    assert mixed is x and y_a is y and y_b is y and lam == 1.0


@pytest.mark.parametrize("beta", [1.0, 0.5])
def test_cutmix_mixes_and_lam_matches_box_area(beta: float) -> None:
    n, h, w = 8, 8, 12
    y = torch.arange(n)
    x = y.float().view(n, 1, 1, 1).expand(n, 3, h, w).clone()  # image i is the constant i
    pasted_any = False
    for seed in range(10):
        mixed, y_a, y_b, lam = cutmix(x, y, gen(seed), beta=beta, prob=1.0)
        assert torch.equal(y_a, y) and sorted(y_b.tolist()) == y.tolist()  # y_b = y[perm]
        assert 0.0 <= lam <= 1.0
        assert torch.equal(mixed, torch.where(mixed == y_b.view(n, 1, 1, 1).float(), mixed, x))
        for i in range(n):
            if y_b[i] != i:
                pasted = mixed[i, 0] != i
                assert pasted.float().mean().item() == pytest.approx(1 - lam)
                pasted_any |= bool(pasted.any())
    assert pasted_any


def test_cutmix_is_reproducible_and_differentiable() -> None:
    x, y = images(6, 3, 8).requires_grad_(), torch.arange(6)
    a = cutmix(x, y, gen(3), prob=1.0)
    b = cutmix(x, y, gen(3), prob=1.0)
    assert torch.equal(a[0], b[0]) and torch.equal(a[2], b[2]) and a[3] == b[3]
    a[0].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


# ---- against the official DSA index code (padded gather / index-assigned mask) ----------------


def _reference_crop(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    b, i, j = torch.meshgrid(
        *(torch.arange(s) for s in (x.size(0), x.size(2), x.size(3))), indexing="ij"
    )
    i = (i + shift[:, 0].view(-1, 1, 1) + 1).clamp(0, x.size(2) + 1)
    j = (j + shift[:, 1].view(-1, 1, 1) + 1).clamp(0, x.size(3) + 1)
    return torch.nn.functional.pad(x, [1, 1, 1, 1]).permute(0, 2, 3, 1)[b, i, j].permute(0, 3, 1, 2)


def _reference_cutout(x: torch.Tensor, centre: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    sh, sw = int(x.size(2) * ratio + 0.5), int(x.size(3) * ratio + 0.5)
    b, i, j = torch.meshgrid(
        torch.arange(x.size(0)), torch.arange(sh), torch.arange(sw), indexing="ij"
    )
    i = (i + centre[:, 0].view(-1, 1, 1) - sh // 2).clamp(0, x.size(2) - 1)
    j = (j + centre[:, 1].view(-1, 1, 1) - sw // 2).clamp(0, x.size(3) - 1)
    mask = torch.ones(x.size(0), x.size(2), x.size(3))
    mask[b, i, j] = 0
    return x * mask.unsqueeze(1)


@pytest.mark.parametrize("h,w", [(8, 8), (9, 13)])
def test_crop_and_cutout_match_official_index_code(h: int, w: int) -> None:
    x = torch.randn(64, 3, h, w, generator=gen(1)) + 5
    crop = Augment("crop").sample(64, (h, w), gen(2))
    out = Augment("crop").apply(x, crop)
    assert torch.equal(out, _reference_crop(x, crop.ops["crop"]["shift"]))
    # the official centre draw, from the same generator state as Cutout.sample
    g = gen(3)
    sh, sw = int(h * 0.5 + 0.5), int(w * 0.5 + 0.5)
    centre = torch.stack(
        [
            torch.randint(0, h + 1 - sh % 2, (64,), generator=g),
            torch.randint(0, w + 1 - sw % 2, (64,), generator=g),
        ],
        1,
    )
    out = Augment("cutout").apply(x, Augment("cutout").sample(64, (h, w), gen(3)))
    assert torch.equal(out, _reference_cutout(x, centre))
