"""Explicit randomness: every random draw comes from a ``torch.Generator`` made here.

Library code never calls ``torch.manual_seed``. Child generators are derived from a seed and a
path of names, so adding a new consumer of randomness does not shift the draws of the others.

Example:
    >>> g = generator(0, "eval", 2)        # repeat 2 of an evaluation with seed 0
"""

from __future__ import annotations

import hashlib

import torch


def derive_seed(seed: int, *path: object) -> int:
    """A 63-bit seed from ``seed`` and a path of names/numbers (stable across runs)."""
    text = "/".join([str(int(seed))] + [str(p) for p in path])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def generator(seed: int, *path: object) -> torch.Generator:
    """A CPU generator seeded by ``derive_seed(seed, *path)``."""
    return torch.Generator().manual_seed(derive_seed(seed, *path))


def randint(gen: torch.Generator, high: int) -> int:
    return int(torch.randint(0, high, (1,), generator=gen))
