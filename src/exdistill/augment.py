"""Differentiable siamese augmentation (DSA, Zhao & Bilen 2021) and CutMix.

Sampling an augmentation's parameters is separate from applying them (as in kornia's
``forward_parameters`` / ``apply_transform``), so one draw can be replayed on several batches:
DSA matching augments the real and the synthetic batch with the *same* transform and
back-propagates through it into the synthetic images.

Ops (registered in ``OPS``; a strategy string joins their names with ``_``), with the defaults of
the official DSA / IDC code (``ParamDiffAug`` / ``DiffAug``):

==========  ==========================================================================  =========
op          transform (u ~ U(0, 1), one draw per image or one per batch)                 ratio
==========  ==========================================================================  =========
color       brightness ``x + (u - 0.5) * b``; saturation ``m_c + (x - m_c) * u * s``     b 1, s 2,
            (``m_c`` per-pixel mean over channels); contrast ``m + (x - m) * (u + c)``   c 0.5
            (``m`` per-image mean)
crop        integer shift by up to ``round(ratio * size)`` pixels, zero padding          0.125
cutout      zero a ``round(ratio * size)`` square at a random centre (clipped)           0.5
flip        horizontal flip with probability ``ratio``                                   0.5
scale       independent x/y scale factors in ``[1/ratio, ratio]`` (affine grid_sample)   1.2
rotate      rotation by up to ``±ratio`` degrees (affine grid_sample)                     15
==========  ==========================================================================  =========

How the ops of a strategy combine is the ``mode``:

- ``"all"`` (default): every op, in strategy order.
- ``"single"``: one op drawn uniformly per call — the official DSA/DM code
  (``ParamDiffAug.aug_mode = 'S'``).
- ``"idc"``: flip and color always, then one of the remaining geometric ops (crop, scale,
  rotate) drawn per call, then cutout — the official IDC ``DiffAug`` (``single_aug=True``).

Deliberate differences from the official DSA code, which reseeds the global RNG before every
draw when siamese: there, x and y of scale/crop/cutout and the three colour factors come out
*equal*; here every factor is an independent draw from the passed generator (as in IDC).

Example:
    >>> aug = Augment("color_crop_cutout_flip_scale_rotate")
    >>> g = torch.Generator().manual_seed(0)
    >>> real, syn = torch.randn(64, 3, 32, 32), torch.randn(10, 3, 32, 32, requires_grad=True)
    >>> real_a, syn_a = aug.siamese([real, syn], g)  # same transform on both
    >>> params = aug.sample(10, (32, 32), g)  # one draw per image ...
    >>> torch.equal(aug.apply(syn, params), aug.apply(syn, params))  # ... replayed exactly
    True
"""

from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from exdistill.errors import ConfigError
from exdistill.registry import Registry
from exdistill.transfer import to_device

Tensor = torch.Tensor
OpParams = dict[str, Tensor]


@dataclass(frozen=True)
class AugmentRatios:
    """Strengths of the ops; defaults are the official DSA/IDC ones (``ParamDiffAug``)."""

    brightness: float = 1.0  # additive offset in [-b/2, b/2]
    saturation: float = 2.0  # saturation factor in [0, s]
    contrast: float = 0.5  # contrast factor in [c, c + 1]
    crop: float = 0.125  # max shift as a fraction of height/width
    cutout: float = 0.5  # side of the cut square as a fraction of height/width
    flip: float = 0.5  # probability of a horizontal flip
    scale: float = 1.2  # scale factors in [1/scale, scale]
    rotate: float = 15.0  # max rotation in degrees

    def __post_init__(self) -> None:
        checks = {
            "brightness": self.brightness >= 0,
            "saturation": self.saturation >= 0,
            "contrast": self.contrast >= 0,
            "crop": 0 <= self.crop <= 1,
            "cutout": 0 <= self.cutout <= 1,
            "flip": 0 <= self.flip <= 1,
            "scale": self.scale >= 1,
            "rotate": 0 <= self.rotate <= 180,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ConfigError(f"augmentation ratio out of range: {bad[0]}={getattr(self, bad[0])}")


@dataclass
class AugmentParams:
    """Sampled parameters of every op to apply, in the order they are applied.

    ``ops[name]`` maps a parameter name to a tensor whose leading dim is ``batch_size``: the batch
    size B (one draw per image) or 1 (one draw broadcast over any batch).

    Attributes:
        ops: e.g. ``{"flip": {"flip": (B,) bool}, "scale": {"factor": (B, 2) float}}``.
        image_size: ``(H, W)`` the parameters were drawn for (crop and cutout are in pixels).
        batch_size: B or 1.
    """

    ops: dict[str, OpParams]
    image_size: tuple[int, int]
    batch_size: int

    def to(self, device: torch.device | str) -> AugmentParams:
        """A copy with every tensor on ``device`` (CPU → CUDA: pinned, asynchronous)."""
        ops = {n: {k: to_device(v, device) for k, v in p.items()} for n, p in self.ops.items()}
        return dataclasses.replace(self, ops=ops)


class AugOp(ABC):
    """One augmentation op: ``sample`` draws its parameters, ``apply`` is a pure function."""

    @staticmethod
    @abstractmethod
    def sample(
        n: int, image_size: tuple[int, int], g: torch.Generator, r: AugmentRatios
    ) -> OpParams:
        """Parameters for ``n`` draws (leading dim ``n``) on the generator's device."""

    @staticmethod
    @abstractmethod
    def apply(x: Tensor, p: OpParams) -> Tensor:
        """Transform ``x`` (N, C, H, W); parameters have leading dim N or 1, on x's device."""


OPS: Registry[type[AugOp]] = Registry("augmentation op")


def _rand(n: int, g: torch.Generator) -> Tensor:
    return torch.rand(n, generator=g, device=g.device)


def _randint(low: int, high: int, n: int, g: torch.Generator) -> Tensor:
    return torch.randint(low, high, (n,), generator=g, device=g.device)


def _per_image(v: Tensor, x: Tensor) -> Tensor:
    """(B,) → (B, 1, 1, 1) in x's dtype, to broadcast over (N, C, H, W)."""
    return v.to(x.dtype).view(-1, 1, 1, 1)


def _affine(x: Tensor, theta: Tensor) -> Tensor:
    """Resample x (N, C, H, W) through affine matrices theta (N or 1, 2, 3), zero padding."""
    theta = theta.to(x.dtype).expand(x.shape[0], 2, 3)
    grid = F.affine_grid(theta, list(x.shape), align_corners=True)  # (N, H, W, 2)
    return F.grid_sample(x, grid, align_corners=True)


@OPS.register("color")
class Color(AugOp):
    @staticmethod
    def sample(
        n: int, image_size: tuple[int, int], g: torch.Generator, r: AugmentRatios
    ) -> OpParams:
        return {
            "brightness": (_rand(n, g) - 0.5) * r.brightness,  # (n,) additive
            "saturation": _rand(n, g) * r.saturation,  # (n,) factor
            "contrast": _rand(n, g) + r.contrast,  # (n,) factor
        }

    @staticmethod
    def apply(x: Tensor, p: OpParams) -> Tensor:
        x = x + _per_image(p["brightness"], x)
        # With one channel the channel mean is x itself, so saturation is the identity.
        x_mean = x.mean(dim=1, keepdim=True)  # (N, 1, H, W)
        x = (x - x_mean) * _per_image(p["saturation"], x) + x_mean
        x_mean = x.mean(dim=(1, 2, 3), keepdim=True)  # (N, 1, 1, 1)
        return (x - x_mean) * _per_image(p["contrast"], x) + x_mean


@OPS.register("crop")
class Crop(AugOp):
    @staticmethod
    def sample(
        n: int, image_size: tuple[int, int], g: torch.Generator, r: AugmentRatios
    ) -> OpParams:
        max_dy, max_dx = (int(s * r.crop + 0.5) for s in image_size)
        dy = _randint(-max_dy, max_dy + 1, n, g)
        dx = _randint(-max_dx, max_dx + 1, n, g)
        return {"shift": torch.stack([dy, dx], dim=1)}  # (n, 2) long: out[i, j] = x[i+dy, j+dx]

    @staticmethod
    def apply(x: Tensor, p: OpParams) -> Tensor:
        n, c, h, w = x.shape
        shift = p["shift"].expand(n, 2)
        # Index into x padded by one zero pixel; indices past the border land on the padding.
        rows = (torch.arange(h, device=x.device) + shift[:, :1] + 1).clamp(0, h + 1)  # (N, H)
        cols = (torch.arange(w, device=x.device) + shift[:, 1:] + 1).clamp(0, w + 1)  # (N, W)
        x_pad = F.pad(x, (1, 1, 1, 1))  # (N, C, H+2, W+2)
        x_pad = x_pad.gather(2, rows[:, None, :, None].expand(n, c, h, w + 2))  # (N, C, H, W+2)
        return x_pad.gather(3, cols[:, None, None, :].expand(n, c, h, w))


@OPS.register("cutout")
class Cutout(AugOp):
    @staticmethod
    def sample(
        n: int, image_size: tuple[int, int], g: torch.Generator, r: AugmentRatios
    ) -> OpParams:
        h, w = image_size
        size_h, size_w = (int(s * r.cutout + 0.5) for s in image_size)
        # Centre range as in the official code: [0, H] for an even side, [0, H) for an odd one.
        y0 = _randint(0, h + 1 - size_h % 2, n, g) - size_h // 2
        x0 = _randint(0, w + 1 - size_w % 2, n, g) - size_w // 2
        box = torch.stack([y0, x0, y0 + size_h, x0 + size_w], dim=1)  # (n, 4)
        box = torch.minimum(box.clamp(min=0), torch.tensor([h, w, h, w], device=box.device))
        return {"box": box}  # (n, 4) long: top, left, bottom, right (exclusive), clipped

    @staticmethod
    def apply(x: Tensor, p: OpParams) -> Tensor:
        h, w = x.shape[-2:]
        box = p["box"]
        ys = torch.arange(h, device=x.device)
        xs = torch.arange(w, device=x.device)
        in_rows = (ys >= box[:, 0:1]) & (ys < box[:, 2:3])  # (N, H)
        in_cols = (xs >= box[:, 1:2]) & (xs < box[:, 3:4])  # (N, W)
        keep = ~(in_rows[:, :, None] & in_cols[:, None, :])  # (N, H, W)
        return x * keep.unsqueeze(1).to(x.dtype)


@OPS.register("flip")
class Flip(AugOp):
    @staticmethod
    def sample(
        n: int, image_size: tuple[int, int], g: torch.Generator, r: AugmentRatios
    ) -> OpParams:
        return {"flip": _rand(n, g) < r.flip}  # (n,) bool

    @staticmethod
    def apply(x: Tensor, p: OpParams) -> Tensor:
        return torch.where(p["flip"].view(-1, 1, 1, 1), x.flip(3), x)


@OPS.register("scale")
class Scale(AugOp):
    @staticmethod
    def sample(
        n: int, image_size: tuple[int, int], g: torch.Generator, r: AugmentRatios
    ) -> OpParams:
        low = 1.0 / r.scale
        sx = _rand(n, g) * (r.scale - low) + low
        sy = _rand(n, g) * (r.scale - low) + low
        return {"factor": torch.stack([sx, sy], dim=1)}  # (n, 2): x, y; > 1 zooms out

    @staticmethod
    def apply(x: Tensor, p: OpParams) -> Tensor:
        sx, sy = p["factor"].unbind(1)
        zero = torch.zeros_like(sx)
        theta = torch.stack([sx, zero, zero, zero, sy, zero], dim=1).view(-1, 2, 3)
        return _affine(x, theta)


@OPS.register("rotate")
class Rotate(AugOp):
    @staticmethod
    def sample(
        n: int, image_size: tuple[int, int], g: torch.Generator, r: AugmentRatios
    ) -> OpParams:
        return {"angle": (_rand(n, g) - 0.5) * 2 * math.radians(r.rotate)}  # (n,) radians

    @staticmethod
    def apply(x: Tensor, p: OpParams) -> Tensor:
        cos, sin = p["angle"].cos(), p["angle"].sin()
        zero = torch.zeros_like(cos)
        theta = torch.stack([cos, -sin, zero, sin, cos, zero], dim=1).view(-1, 2, 3)
        return _affine(x, theta)


# ---- modes: which ops of the strategy run in one call, and in which order ----------------------


def _choose(options: list[str], g: torch.Generator) -> list[str]:
    """One option drawn uniformly (as a one-element list), or [] when there is none."""
    return [options[int(_randint(0, len(options), 1, g))]] if options else []


def _plan_all(names: tuple[str, ...], g: torch.Generator) -> list[str]:
    return list(names)


def _plan_single(names: tuple[str, ...], g: torch.Generator) -> list[str]:
    return _choose(list(names), g)


_IDC_FRONT, _IDC_BACK = ("flip", "color"), ("cutout",)


def _plan_idc(names: tuple[str, ...], g: torch.Generator) -> list[str]:
    front = [n for n in _IDC_FRONT if n in names]
    back = [n for n in _IDC_BACK if n in names]
    middle = [n for n in names if n not in _IDC_FRONT + _IDC_BACK]
    return front + _choose(middle, g) + back


MODES: dict[str, Callable[[tuple[str, ...], torch.Generator], list[str]]] = {
    "all": _plan_all,
    "single": _plan_single,
    "idc": _plan_idc,
}


# DSA's strategy (Zhao & Bilen 2021): used by dsa, idc, dm, mtt and MTT's experts.
DSA_STRATEGY = "color_crop_cutout_flip_scale_rotate"


class Augment:
    """A differentiable augmentation pipeline built from a strategy string.

    Args:
        strategy: op names joined by ``_`` (see ``OPS.names()``); ``""`` or ``"none"`` for none.
            DSA/IDC-evaluation default ``"color_crop_cutout_flip_scale_rotate"``.
        mode: ``"all"``, ``"single"`` or ``"idc"`` (module docstring).
        **ratios: fields of ``AugmentRatios`` (e.g. ``cutout=0.25``).

    Shape:
        x: (N, C, H, W) float, C any (1 or 3 for images); output has the same shape.

    Raises:
        ConfigError: unknown op, repeated op, unknown mode, unknown or out-of-range ratio.
    """

    def __init__(
        self,
        strategy: str = "color_crop_cutout_flip_scale_rotate",
        mode: str = "all",
        **ratios: float,
    ) -> None:
        names = tuple(n for n in strategy.lower().split("_") if n and n != "none")
        for name in names:
            OPS.get(name)  # ConfigError for an unknown op
        if len(set(names)) != len(names):
            raise ConfigError(f"augmentation strategy '{strategy}' repeats an op")
        if mode not in MODES:
            raise ConfigError(
                f"unknown augmentation mode '{mode}'; choose from: {', '.join(MODES)}"
            )
        fields = {f.name for f in dataclasses.fields(AugmentRatios)}
        unknown = sorted(set(ratios) - fields)
        if unknown:
            choices = ", ".join(sorted(fields))
            raise ConfigError(f"unknown augmentation ratio '{unknown[0]}'; choose from: {choices}")
        self.strategy = strategy
        self.names = names
        self.mode = mode
        self.ratios = AugmentRatios(**ratios)

    def __repr__(self) -> str:
        return f"Augment(strategy={self.strategy!r}, mode={self.mode!r}, ratios={self.ratios})"

    def sample(
        self,
        batch: int,
        image_size: tuple[int, int],
        generator: torch.Generator,
        per_sample: bool = True,
        device: torch.device | str | None = None,
    ) -> AugmentParams:
        """Draw the parameters for a batch from ``generator`` alone.

        Args:
            batch: B, the number of images the parameters are for (ignored if not per_sample).
            image_size: (H, W) of those images.
            generator: the only source of randomness; draws happen on its device.
            per_sample: one draw per image (leading dim B) or one for the whole batch (dim 1).
            device: where the returned tensors live (default: the generator's device).
        """
        n = batch if per_sample else 1
        size = (int(image_size[0]), int(image_size[1]))
        plan = MODES[self.mode](self.names, generator)
        ops = {name: OPS.get(name).sample(n, size, generator, self.ratios) for name in plan}
        params = AugmentParams(ops=ops, image_size=size, batch_size=n)
        return params.to(device) if device is not None else params

    def apply(self, x: Tensor, params: AugmentParams) -> Tensor:
        """Apply sampled parameters to x (N, C, H, W); differentiable with respect to x.

        Parameters with leading dim 1 broadcast over any N; leading dim B needs N == B.

        Raises:
            ValueError: x is not 4-D, or its batch or image size does not fit ``params``.
        """
        if x.dim() != 4:
            raise ValueError(f"expected images (N, C, H, W), got shape {tuple(x.shape)}")
        if params.batch_size not in (1, x.shape[0]):
            raise ValueError(
                f"parameters drawn for a batch of {params.batch_size}, got {x.shape[0]} images"
            )
        if tuple(x.shape[-2:]) != params.image_size:
            size = tuple(x.shape[-2:])
            raise ValueError(f"parameters drawn for images of size {params.image_size}, got {size}")
        for name, p in params.ops.items():
            x = OPS.get(name).apply(x, {k: to_device(v, x.device) for k, v in p.items()})
        return x

    def __call__(self, x: Tensor, generator: torch.Generator, per_sample: bool = True) -> Tensor:
        """Sample parameters for x (N, C, H, W) and apply them."""
        params = self.sample(x.shape[0], x.shape[-2:], generator, per_sample, device=x.device)
        return self.apply(x, params)

    def siamese(self, xs: list[Tensor], generator: torch.Generator) -> list[Tensor]:
        """One draw for the whole batch, applied to every tensor in xs (each (N_i, C, H, W)).

        This is DSA's siamese augmentation: real and synthetic batches get the same transform.
        """
        if not xs:
            return []
        params = self.sample(1, xs[0].shape[-2:], generator, per_sample=False, device=xs[0].device)
        return [self.apply(x, params) for x in xs]


def cutmix(
    x: Tensor,
    y: Tensor,
    generator: torch.Generator,
    beta: float = 1.0,
    prob: float = 0.5,
) -> tuple[Tensor, Tensor, Tensor, float]:
    """CutMix (Yun et al. 2019) as in IDC's network training: paste a box from a permuted batch.

    With probability ``prob``: lam ~ Beta(beta, beta), a box of area about (1 - lam) at a random
    centre (clipped to the image) is copied from ``x[perm]``, and lam is recomputed from the
    clipped box. Otherwise nothing is mixed and ``(x, y, y, 1.0)`` is returned. Train with
    ``lam * CE(out, y_a) + (1 - lam) * CE(out, y_b)``.

    Args:
        x: images (N, C, H, W); not modified in place, differentiable.
        y: labels (N,).
        generator: the only source of randomness (the Beta draw uses a NumPy generator seeded
            from it, since torch's gamma sampler takes no generator).

    Returns:
        mixed x (N, C, H, W), y_a = y (N,), y_b = y[perm] (N,), lam (fraction of x kept).
    """
    if not 0 <= prob <= 1 or beta <= 0:
        raise ConfigError(f"cutmix needs 0 <= prob <= 1 and beta > 0, got prob={prob}, beta={beta}")
    if float(_rand(1, generator)) >= prob:
        return x, y, y, 1.0
    seed = int(_randint(0, 2**62, 1, generator))
    lam = float(np.random.default_rng(seed).beta(beta, beta))
    n, _, h, w = x.shape
    perm = to_device(torch.randperm(n, generator=generator, device=generator.device), x.device)
    cut = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(h * cut), int(w * cut)
    cy, cx = int(_randint(0, h, 1, generator)), int(_randint(0, w, 1, generator))
    top, bottom = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, h)
    left, right = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, w)
    mask = torch.zeros(1, 1, h, w, dtype=torch.bool, device=x.device)
    mask[..., top:bottom, left:right] = True
    mixed = torch.where(mask, x[perm], x)
    lam = 1.0 - (bottom - top) * (right - left) / (h * w)
    return mixed, y, y[perm.to(y.device)], lam
