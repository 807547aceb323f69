"""Host → device copies that do not make the host wait.

Random draws happen on CPU generators (explicit, reproducible randomness), so the inner loops
copy small CPU tensors (indices, augmentation parameters, permutations) to the device every
step. A plain ``tensor.to("cuda")`` from pageable memory synchronises the stream; from pinned
memory with ``non_blocking=True`` it is queued like a kernel. PyTorch's pinned-memory cache
keeps the source alive until the copy has run.
"""

from __future__ import annotations

import torch


def to_device(t: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """``t`` on ``device``; a CPU tensor bound for CUDA is pinned and copied asynchronously.

    The copy is queued from a fresh pinned buffer, so changing ``t`` afterwards is safe unless
    ``t`` was already pinned (then it is that buffer).

    Example:
        >>> to_device(torch.arange(3), "cpu").tolist()
        [0, 1, 2]
    """
    device = torch.device(device)
    if device.type != "cuda" or t.device.type != "cpu":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)
