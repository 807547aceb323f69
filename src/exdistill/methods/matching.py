"""The gradient-matching core shared by DC, DSA, IDC and EDD's regulariser.

Per class c, the loss is ``D(∇θ ℓ(θ; A(S_c)), ∇θ ℓ(θ; A(R_c)))``: the distance between the
gradient a synthetic batch and a real batch induce on the matched layers of θ, where A is one
augmentation draw shared by both batches (siamese) or the identity. Classes are processed in
chunks, each chunk's loss back-propagated to the stored images at once, so peak memory is one
chunk's activations (plus the synthetic set itself) whatever the number of classes.

Chunking never changes the result: the caller draws every random number of a step before any
chunk is computed (``ClassBatch.aug`` carries the augmentation draw), and each class's term
touches only that class's stored images, so the per-chunk backward passes add gradients with
disjoint support (exact in floating point). ``resolve_class_chunk`` picks the chunk size from a
measured per-class memory cost (``term_bytes``) and the memory available (``available_bytes``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from exdistill.augment import Augment, AugmentParams
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
    ``aug``: the term's siamese augmentation, drawn beforehand (on the device of the images);
    ``None`` with an ``augment`` draws it from the generator when the term is computed.
    """

    label: int
    real: torch.Tensor
    syn: torch.Tensor
    weight: float = 1.0
    aug: AugmentParams | None = None


@dataclass(frozen=True)
class ForwardOptions:
    """How the matching step runs its forward passes: the GPU fast path. Default: eager fp32.

    ``channels_last``: images enter the network as NHWC (the network must have been converted
    with ``net.to(memory_format=torch.channels_last)``); faster convolutions on tensor-core GPUs,
    slower on CPU (docs/performance.md). ``autocast_bf16``: forward passes under CUDA bf16
    autocast; the distance is computed in fp32. ``first_order``: a second callable of the same
    network (e.g. ``torch.compile(net)``) used where no double backward is needed — the real
    batch — because aot_autograd cannot differentiate twice.
    """

    channels_last: bool = False
    autocast_bf16: bool = False
    first_order: nn.Module | None = None

    def images(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        if not self.autocast_bf16:
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


PLAIN = ForwardOptions()


def class_gradients(
    model: nn.Module,
    params: list[nn.Parameter],
    images: torch.Tensor,
    label: int,
    create_graph: bool,
    forward: ForwardOptions = PLAIN,
) -> tuple[torch.Tensor, ...]:
    targets = torch.full((images.shape[0],), label, dtype=torch.long, device=images.device)
    images = forward.images(images)
    if not create_graph and forward.first_order is not None:
        model = forward.first_order
    with forward.autocast(images.device):
        logits = model(images)
    loss = F.cross_entropy(logits.float(), targets)
    return torch.autograd.grad(loss, params, create_graph=create_graph)


def class_match_loss(
    model: nn.Module,
    params: list[nn.Parameter],
    distance: Callable[[Grads, Grads], torch.Tensor],
    batch: ClassBatch,
    augment: Augment | None,
    generator: torch.Generator,
    forward: ForwardOptions = PLAIN,
) -> torch.Tensor:
    """``weight · D(∇ℓ(A(syn)), ∇ℓ(A(real)))`` with one shared augmentation draw A."""
    real, syn = batch.real, batch.syn
    if augment is not None:
        if batch.aug is None:
            real, syn = augment.siamese([real, syn], generator)
        else:
            real, syn = augment.apply(real, batch.aug), augment.apply(syn, batch.aug)
    g_real = [g.detach() for g in class_gradients(model, params, real, batch.label, False, forward)]
    g_syn = class_gradients(model, params, syn, batch.label, True, forward)
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
    forward: ForwardOptions = PLAIN,
    sync: bool = True,
) -> float | torch.Tensor:
    """Sum the matching loss over ``classes`` chunk by chunk, back-propagating each chunk into
    the stored images (their ``.grad`` accumulates). Returns the total loss value.

    ``make_batches(chunk)`` builds the chunk's ClassBatch terms (decoding only those classes).
    ``inputs``: the leaves that need gradients (the stored images); naming them skips the
    backward into θ's parameters (−7 % FLOPs, identical results; benchmarks/matching_speed.py).
    ``sync=False`` returns the total as a detached float64 tensor on the device instead of a
    Python float, so a GPU step never waits for the host (the caller checks it later).
    """
    total: torch.Tensor | float = 0.0
    for chunk in chunks(list(classes), class_chunk):
        loss = sum(
            class_match_loss(model, params, distance, batch, augment, generator, forward)
            for batch in make_batches(chunk)
        )
        if not isinstance(loss, torch.Tensor):  # no terms in this chunk
            continue
        if loss.requires_grad:
            loss.backward(inputs=inputs)
        # float64, summed chunk by chunk: the same value as adding Python floats (the log).
        total = total + loss.detach().double()
    if sync:
        return float(total)
    if not isinstance(total, torch.Tensor):
        device = inputs[0].device if inputs else torch.device("cpu")
        total = torch.zeros((), dtype=torch.float64, device=device)
    return total


# ----------------------------------------------------------------------------- memory
# Of the available memory, what a step's chunk of matching graphs may take. A fifth leaves room
# for the backward pass (it allocates gradients about the size of what it frees), the real data,
# the synthetic set with its gradient and momentum, and evaluation. Chosen so that a 200-class
# Tiny-ImageNet-shape problem at ipc 50 stays under 8 GiB on a 24 GiB machine, where a quarter
# would take ~9 GiB (docs/scale.md, section 1). Smaller chunks cost no speed on CPU.
SAFE_FRACTION = 0.2


def resolve_class_chunk(
    requested: int,
    classes: int,
    per_class_bytes: int,
    available: int | None,
    fraction: float = SAFE_FRACTION,
) -> int:
    """Classes per backward pass: ``requested`` if ≥ 0, else (auto, ``-1``) the largest chunk
    whose matching graphs fit in ``fraction`` of ``available`` bytes.

    Returns 0 ("all at once") whenever all ``classes`` fit, or when the available memory is
    unknown (``None``), so small problems run exactly as with ``class_chunk=0``; never less
    than 1. Pure: the caller measures ``per_class_bytes`` (``term_bytes``) and ``available``
    (``available_bytes``).

    Example:
        >>> resolve_class_chunk(-1, 200, per_class_bytes=300 << 20, available=16 << 30)
        10
    """
    if requested >= 0:
        return requested
    if available is None or per_class_bytes <= 0:
        return 0
    budget = int(fraction * available)
    if classes * per_class_bytes <= budget:
        return 0
    return max(1, budget // per_class_bytes)


def available_bytes(device: torch.device, meminfo: str = "/proc/meminfo") -> int | None:
    """Memory a new allocation on ``device`` can take, or ``None`` if unknown.

    CUDA: free device memory plus what PyTorch's caching allocator holds unused. CPU:
    ``MemAvailable`` of ``/proc/meminfo`` (Linux), else psutil's ``available`` if installed.
    """
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(free + cached)
    if device.type != "cpu":
        return None
    try:
        with open(meminfo) as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    try:
        import psutil
    except ImportError:
        return None
    return int(psutil.virtual_memory().available)


def term_bytes(
    model: nn.Module,
    params: list[nn.Parameter],
    distance: Callable[[Grads, Grads], torch.Tensor],
    real: torch.Tensor,
    syn: torch.Tensor,
    forward: ForwardOptions = PLAIN,
) -> int:
    """Measured bytes the autograd graph of one matching term keeps until its backward.

    Runs ``class_match_loss`` once on the given (dummy) batches with a saved-tensor hook that
    records every distinct storage autograd keeps, parameters excluded. This counts the real
    batch's graph too, which is freed before the chunk's backward: a safe overestimate. Use a
    throwaway network (batch norm would update its running statistics) and tensors that draw
    nothing from the run's generators.
    """
    keep = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in keep:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    syn = syn.detach().requires_grad_(True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = class_match_loss(
            model, params, distance, ClassBatch(0, real, syn), None, torch.Generator(), forward
        )
    del loss
    return sum(seen.values())
