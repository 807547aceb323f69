"""Numeric precision of a run: ``fp32``, ``bf16`` or ``auto``, and what the hardware offers.

``bf16`` runs every forward pass of every loop (evaluation and θ training, filter networks,
experts, herding features, DM's embeddings, MTT's student steps, the matching step with its
double backward) under bf16 autocast: convolutions and matrix products take bf16 inputs and
accumulate in fp32, while the parameters, their gradients, the matching distance and the image
update stay fp32 (autocast leaves elementwise ops and reductions of fp32 tensors alone, and
cross-entropy runs in fp32). One scope around the job, ``autocast_scope``, is what every loop
honours: no loop needs its own switch, so none can forget it.

``auto`` (the default of every command) is bf16 where the device runs it fast, else fp32:
CUDA with bf16 support, or a CPU whose flags include AMX-BF16 or AVX512-BF16 (read from
``/proc/cpuinfo``, never assumed) working on images of at least ``AUTO_MIN_PIXELS`` pixels.
Accuracy parity (validation, IDC, EDD and DM, Fashion-MNIST and CIFAR-10, two seeds each):
every bf16 − fp32 difference within the evaluation std. Speed on a 2-core Xeon with
``amx_bf16``: CIFAR-10 IDC 1.22×, EDD 1.53×; Fashion-MNIST IDC 1.54×, EDD 1.37× (distillation);
the main job on 8×8 digits 0.84× (hence the pixel floor); the matching step at width 128 1.97×
the fp32 reference loop at one thread (1.72× at two), evaluation training 1.52×
(``benchmarks/matching_speed.py``, ``benchmarks/train_speed.py``; docs/performance.md).
NCHW bf16 convolutions do not reach the AMX rate, which is where the speed is still to be had.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import torch

from exdistill.errors import ConfigError

PRECISIONS = ("fp32", "bf16", "auto")
DEFAULT_PRECISION = "auto"  # of every command, the API and RunConfig
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # instructions that make bf16 fast on CPU
# On CPU, ``auto`` keeps fp32 for images smaller than this many pixels: there the casts cost
# more than the bf16 units save. Measured (docs/performance.md): the main job (digits, 8×8)
# took 96 s under bf16 against 81 s in fp32; CIFAR-10 (32×32) IDC 166 s against 205 s and EDD
# 353 s against 545 s; Fashion-MNIST (28×28, padded to 32×32 by the first conv) distillation
# IDC 183 s against 281 s and EDD 397 s against 545 s (one thread each, side by side, idle).
AUTO_MIN_PIXELS = 28 * 28


def cpu_bf16_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> tuple[str, ...]:
    """The bf16 instructions this CPU reports (``amx_bf16``, ``avx512_bf16``); () if none or
    unknown (no /proc/cpuinfo).

    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "cpuinfo")
    >>> _ = open(path, "w").write("flags\\t\\t: fpu avx512f avx512_bf16 amx_tile amx_bf16\\n")
    >>> cpu_bf16_flags(path)
    ('amx_bf16', 'avx512_bf16')
    """
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return ()
    flags: set[str] = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
    return tuple(f for f in CPU_BF16_FLAGS if f in flags)


def resolve_precision(
    name: str,
    device: str | torch.device,
    cpu_flags: tuple[str, ...] | None = None,
    image_size: tuple[int, int] | None = None,
) -> str:
    """``fp32`` or ``bf16`` for ``name`` on ``device`` (``auto``: bf16 where it is fast: CUDA
    with bf16, or a CPU with bf16 instructions working on images of at least
    ``AUTO_MIN_PIXELS`` pixels; ``image_size`` None: not known, not checked).

    >>> resolve_precision("auto", "cpu", cpu_flags=("amx_bf16",))
    'bf16'
    >>> resolve_precision("auto", "cpu", cpu_flags=()), resolve_precision("bf16", "cpu", ())
    ('fp32', 'bf16')
    >>> resolve_precision("auto", "cpu", ("amx_bf16",), (8, 8))  # digits: the casts cost more
    'fp32'
    """
    if name not in PRECISIONS:
        raise ConfigError(f"precision: unknown '{name}'; choose from: {', '.join(PRECISIONS)}")
    if name != "auto":
        return name
    device = torch.device(device)
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    flags = cpu_bf16_flags() if cpu_flags is None else cpu_flags
    large = image_size is None or image_size[0] * image_size[1] >= AUTO_MIN_PIXELS
    return "bf16" if device.type == "cpu" and flags and large else "fp32"


@contextlib.contextmanager
def autocast_scope(precision: str, device: str | torch.device) -> Iterator[None]:
    """Run the enclosed work at ``precision`` (already resolved: fp32 or bf16) on ``device``."""
    if precision == "fp32":
        yield
        return
    device = torch.device(device)
    # No weight cache: autocast caches the bf16 copy of each fp32 parameter until the outermost
    # scope exits, and this scope spans whole training loops, so with the cache every forward
    # after an optimizer step would still see the first step's weights (networks trained that
    # way stayed at chance: tests/test_precision.py).
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, cache_enabled=False):
        yield


def hardware_record(requested: str, resolved: str) -> dict[str, object]:
    """What ``metrics.json`` records about precision: asked, used, and the CPU's bf16 flags."""
    return {
        "precision": resolved,
        "precision_requested": requested,
        "cpu_bf16": list(cpu_bf16_flags()),
    }


__all__ = [
    "AUTO_MIN_PIXELS",
    "DEFAULT_PRECISION",
    "PRECISIONS",
    "autocast_scope",
    "cpu_bf16_flags",
    "hardware_record",
    "resolve_precision",
]
