"""The gradient-matching core shared by DC, DSA, IDC and EDD's regulariser.

Per class c, the loss is ``D(∇θ ℓ(θ; A(S_c)), ∇θ ℓ(θ; A(R_c)))``: the distance between the
gradient a synthetic batch and a real batch induce on the matched layers of θ, where A is one
augmentation draw shared by both batches (siamese) or the identity. Classes are processed in
chunks, each chunk's loss back-propagated to the stored images at once, so peak memory is one
chunk's activations (plus the synthetic set itself) whatever the number of classes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from exdistill.augment import Augment
from exdistill.registry import Registry

Grads = Sequence[torch.Tensor]
DISTANCES: Registry[Callable[[Grads, Grads], torch.Tensor]] = Registry("distance")
LAYERS: Registry[Callable[[nn.Module], list[nn.Parameter]]] = Registry("layer selection")


# ----------------------------------------------------------------------------- distances
def _rows(g: torch.Tensor) -> torch.Tensor:
    """A parameter gradient as (output units, rest): conv (O, I, k, k) → (O, I·k·k)."""
    return g.reshape(g.shape[0], -1)


@DISTANCES.register("dc")
def dc_distance(syn: Grads, real: Grads) -> torch.Tensor:
    """DC's layer-wise distance: Σ_layers Σ_outputs (1 − cos(g_syn[o], g_real[o])).

    One-dimensional parameters (biases, norm scales) contribute nothing, as in the DC paper.
    """
    total = syn[0].new_zeros(())
    for gs, gr in zip(syn, real, strict=True):
        if gs.ndim == 1:
            continue
        gs, gr = _rows(gs), _rows(gr)
        cos = (gs * gr).sum(-1) / (gs.norm(dim=-1) * gr.norm(dim=-1) + 1e-6)
        total = total + (1 - cos).sum()
    return total


@DISTANCES.register("mse")
def mse_distance(syn: Grads, real: Grads) -> torch.Tensor:
    """Σ_layers Σ (g_syn − g_real)²."""
    return sum(((gs - gr) ** 2).sum() for gs, gr in zip(syn, real, strict=True))


@DISTANCES.register("l1")
def l1_distance(syn: Grads, real: Grads) -> torch.Tensor:
    """Σ_layers Σ |g_syn − g_real|."""
    return sum((gs - gr).abs().sum() for gs, gr in zip(syn, real, strict=True))


@DISTANCES.register("cos")
def cos_distance(syn: Grads, real: Grads) -> torch.Tensor:
    """1 − cos of the concatenated, flattened gradients of all matched layers."""
    gs = torch.cat([g.reshape(-1) for g in syn])
    gr = torch.cat([g.reshape(-1) for g in real])
    return 1 - (gs * gr).sum() / (gs.norm() * gr.norm() + 1e-6)


# ----------------------------------------------------------------------------- layers
@LAYERS.register("conv")
def conv_weights(model: nn.Module) -> list[nn.Parameter]:
    """Weights of the convolution layers only (IDC)."""
    return [m.weight for m in model.modules() if isinstance(m, nn.Conv2d)]


@LAYERS.register("weights")
def all_weights(model: nn.Module) -> list[nn.Parameter]:
    """Every parameter with two or more dimensions (conv and linear weights)."""
    return [p for p in model.parameters() if p.ndim >= 2]


@LAYERS.register("all")
def all_parameters(model: nn.Module) -> list[nn.Parameter]:
    return list(model.parameters())


# ----------------------------------------------------------------------------- matching
@dataclass
class ClassBatch:
    """One matching term: real and synthetic images of one class, and the term's weight.

    ``syn`` must be a function of the trainable stored images (it carries the graph);
    ``real`` carries none. Shapes ``(B_real, C, H, W)`` and ``(B_syn, C, H, W)``.
    """

    label: int
    real: torch.Tensor
    syn: torch.Tensor
    weight: float = 1.0


def class_gradients(
    model: nn.Module,
    params: list[nn.Parameter],
    images: torch.Tensor,
    label: int,
    create_graph: bool,
) -> tuple[torch.Tensor, ...]:
    targets = torch.full((images.shape[0],), label, dtype=torch.long, device=images.device)
    loss = F.cross_entropy(model(images), targets)
    return torch.autograd.grad(loss, params, create_graph=create_graph)


def class_match_loss(
    model: nn.Module,
    params: list[nn.Parameter],
    distance: Callable[[Grads, Grads], torch.Tensor],
    batch: ClassBatch,
    augment: Augment | None,
    generator: torch.Generator,
) -> torch.Tensor:
    """``weight · D(∇ℓ(A(syn)), ∇ℓ(A(real)))`` with one shared augmentation draw A."""
    real, syn = batch.real, batch.syn
    if augment is not None:
        real, syn = augment.siamese([real, syn], generator)
    g_real = [g.detach() for g in class_gradients(model, params, real, batch.label, False)]
    g_syn = class_gradients(model, params, syn, batch.label, True)
    return batch.weight * distance(g_syn, g_real)


def chunks(items: Sequence[int], size: int) -> Iterator[Sequence[int]]:
    size = size if size > 0 else max(1, len(items))
    for start in range(0, len(items), size):
        yield items[start : start + size]


def match_and_backward(
    model: nn.Module,
    params: list[nn.Parameter],
    distance: Callable[[Grads, Grads], torch.Tensor],
    make_batches: Callable[[Sequence[int]], list[ClassBatch]],
    classes: Sequence[int],
    augment: Augment | None,
    generator: torch.Generator,
    class_chunk: int = 0,
    inputs: list[torch.Tensor] | None = None,
) -> float:
    """Sum the matching loss over ``classes`` chunk by chunk, back-propagating each chunk into
    the stored images (their ``.grad`` accumulates). Returns the total loss value.

    ``make_batches(chunk)`` builds the chunk's ClassBatch terms (decoding only those classes).
    ``inputs``: the leaves that need gradients (the stored images); naming them skips the
    backward into θ's parameters (−7 % FLOPs, identical results; benchmarks/matching_speed.py).
    """
    total = 0.0
    for chunk in chunks(list(classes), class_chunk):
        loss = sum(
            class_match_loss(model, params, distance, batch, augment, generator)
            for batch in make_batches(chunk)
        )
        if isinstance(loss, torch.Tensor) and loss.requires_grad:
            loss.backward(inputs=inputs)
        total += float(loss.detach()) if isinstance(loss, torch.Tensor) else float(loss)
    return total
