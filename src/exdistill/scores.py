"""DD-Ranking's scores of a distilled set, computed from test accuracies.

Definitions from DD-Ranking (NUS-HPC-AI-Lab/DD-Ranking, its documentation's introduction and
metrics pages, https://nus-hpc-ai-lab.github.io/DD-Ranking/); this is an independent
implementation. Every accuracy is a fraction in [0, 1], and so are the scores' inputs and
outputs (DD-Ranking prints LRS and ARS as percentages):

- IOR, improvement over random = Acc(synthetic) − Acc(random real subset of the same ipc);
- HLR, hard-label recovery = Acc(full real data) − Acc(synthetic), under hard labels;
- LRS, label-robust score: α = w·IOR − (1 − w)·HLR, LRS = (e^α − e^−1) / (e − e^−1);
- ARS, augmentation-robust score: β = γ·(syn_aug − rdm_aug) + (1 − γ)·(syn_noaug − rdm_noaug),
  ARS = (e^β − e^−1) / (e − e^−1).

All accuracies in one formula must come from the same evaluation protocol (network, training
schedule, augmentation), or the differences measure the protocols rather than the data. Every
method of this library evaluates with hard labels, so its Acc(synthetic) is both DD-Ranking's
"syn-hard" (for HLR) and "syn-any" (for IOR).

With w = 0.5, α = Acc(synthetic) − (Acc(random) + Acc(full)) / 2: the synthetic set's lead over
the midpoint between the random subset and the full data. α = 0 gives LRS = 1 / (1 + e) ≈ 0.269,
not 0.5 (the normalisation is exponential); docs/benchmarks.md explains how to read it.
"""

from __future__ import annotations

import math

LRS_WEIGHT = 0.5  # w: DD-Ranking's leaderboard default (IOR and HLR count equally)
ARS_WEIGHT = 0.5  # γ: DD-Ranking's default (with and without augmentation count equally)

_LOW, _HIGH = math.exp(-1.0), math.e


def _fraction(name: str, value: float) -> float:
    """``value`` as a float, refused outside [0, 1]: a percentage passed by mistake would make
    e^α overflow the score's [0, 1] range instead of failing."""
    v = float(value)
    if not 0.0 <= v <= 1.0:  # NaN fails too
        raise ValueError(f"{name}: an accuracy must be a fraction in [0, 1], got {value!r}")
    return v


def _weight(name: str, value: float) -> float:
    v = float(value)
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"{name}: a weight must be in [0, 1], got {value!r}")
    return v


def normalise(x: float) -> float:
    """(e^x − e^−1) / (e − e^−1): maps x ∈ [−1, 1] onto [0, 1], increasing and convex."""
    return (math.exp(x) - _LOW) / (_HIGH - _LOW)


def ior(syn_acc: float, random_acc: float) -> float:
    """Improvement over random: Acc(synthetic) − Acc(random subset of the same ipc), in [−1, 1].

    >>> round(ior(0.8, 0.7), 6)
    0.1
    """
    return _fraction("syn_acc", syn_acc) - _fraction("random_acc", random_acc)


def hlr(syn_acc: float, full_acc: float) -> float:
    """Hard-label recovery: Acc(full real data) − Acc(synthetic), in [−1, 1]; smaller is better
    (0: the synthetic set trains as well as the whole training set).

    >>> round(hlr(0.8, 1.0), 6)
    0.2
    """
    return _fraction("full_acc", full_acc) - _fraction("syn_acc", syn_acc)


def lrs(ior: float, hlr: float, w: float = LRS_WEIGHT) -> float:
    """Label-robust score: α = w·IOR − (1 − w)·HLR, LRS = (e^α − e^−1) / (e − e^−1), in [0, 1].

    IOR and HLR are differences of accuracies (fractions), so α ∈ [−1, 1].

    >>> round(lrs(0.1, 0.2), 4)  # α = 0.5·0.1 − 0.5·0.2 = −0.05
    0.2482
    >>> lrs(1.0, -1.0), lrs(-1.0, 1.0)  # α = 1 and α = −1: the bounds
    (1.0, 0.0)
    """
    for name, v in (("ior", ior), ("hlr", hlr)):
        if not -1.0 <= v <= 1.0:
            raise ValueError(f"{name}: a difference of accuracies is in [-1, 1], got {v!r}")
    w = _weight("w", w)
    return normalise(w * ior - (1.0 - w) * hlr)


def ars(
    syn_aug: float,
    rdm_aug: float,
    syn_noaug: float,
    rdm_noaug: float,
    gamma: float = ARS_WEIGHT,
) -> float:
    """Augmentation-robust score: β = γ·(syn_aug − rdm_aug) + (1 − γ)·(syn_noaug − rdm_noaug),
    ARS = (e^β − e^−1) / (e − e^−1), in [0, 1].

    ``*_aug``: accuracies of networks trained with the protocol's augmentation; ``*_noaug``: the
    same protocol without it; ``syn``: the synthetic set, ``rdm``: a random real subset of the
    same ipc.

    >>> round(ars(0.8, 0.7, 0.6, 0.4), 4)  # β = 0.5·0.1 + 0.5·0.2 = 0.15
    0.3378
    """
    gamma = _weight("gamma", gamma)
    aug = _fraction("syn_aug", syn_aug) - _fraction("rdm_aug", rdm_aug)
    noaug = _fraction("syn_noaug", syn_noaug) - _fraction("rdm_noaug", rdm_noaug)
    return normalise(gamma * aug + (1.0 - gamma) * noaug)


def dd_ranking_scores(syn_acc: float, random_acc: float, full_acc: float) -> dict[str, float]:
    """``{"ior", "hlr", "lrs"}`` (fractions, w = 0.5) from the mean test accuracies of the
    synthetic set, the random subset of the same ipc and the full data, all under one protocol.

    DD-Ranking averages the scores of its evaluation rounds; this scores the mean accuracies.
    IOR and HLR are the same either way (they are linear); LRS differs by the convexity of e^α,
    negligibly for the spread of a few repeats.

    >>> s = dd_ranking_scores(0.8, 0.7, 1.0)
    >>> round(s["ior"], 6), round(s["hlr"], 6), round(s["lrs"], 4)
    (0.1, 0.2, 0.2482)
    """
    i, h = ior(syn_acc, random_acc), hlr(syn_acc, full_acc)
    return {"ior": i, "hlr": h, "lrs": lrs(i, h)}


__all__ = [
    "ARS_WEIGHT",
    "LRS_WEIGHT",
    "ars",
    "dd_ranking_scores",
    "hlr",
    "ior",
    "lrs",
    "normalise",
]
