"""EDD's real-data filter: which real images the next segment is distilled against.

After segment k a filter network trained on S_≤k classifies every real training image. The next
segment's pool keeps, per class, every misclassified image plus the correctly classified ones
minus a fraction ``drop`` of them (the most confident first, or at random), never fewer than
``min_per_class`` images.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch


@dataclass
class FilterOutcome:
    """Predictions of one filter network on the real training set."""

    correct: torch.Tensor  # (N,) bool
    confidence: torch.Tensor  # (N,) softmax probability of the true class


def filter_outcome(logits: torch.Tensor, labels: torch.Tensor) -> FilterOutcome:
    probs = logits.float().softmax(dim=1)
    return FilterOutcome(
        correct=logits.argmax(1) == labels,
        confidence=probs.gather(1, labels[:, None]).squeeze(1),
    )


def combine_outcomes(outcomes: list[FilterOutcome]) -> FilterOutcome:
    """An ensemble's verdict: correct only where every network is correct (so an image any
    network gets wrong is kept, PDD's rule), confidence the networks' mean.

    >>> a = FilterOutcome(torch.tensor([True, True, False]), torch.tensor([0.9, 0.6, 0.2]))
    >>> b = FilterOutcome(torch.tensor([True, False, False]), torch.tensor([0.7, 0.4, 0.1]))
    >>> c = combine_outcomes([a, b])
    >>> c.correct.tolist(), [round(x, 2) for x in c.confidence.tolist()]
    ([True, False, False], [0.8, 0.5, 0.15])
    """
    if len(outcomes) == 1:
        return outcomes[0]
    correct = torch.stack([o.correct for o in outcomes]).all(dim=0)
    confidence = torch.stack([o.confidence for o in outcomes]).mean(dim=0)
    return FilterOutcome(correct, confidence)


def forgotten(previous: FilterOutcome | None, current: FilterOutcome) -> int | None:
    """Images right under the previous filter and wrong under the current one."""
    if previous is None:
        return None
    return int((previous.correct & ~current.correct).sum())


def select_pool(
    class_index: list[torch.Tensor],
    outcome: FilterOutcome,
    drop: float,
    drop_order: Literal["confident", "random"],
    min_per_class: int,
    generator: torch.Generator,
) -> list[torch.Tensor]:
    """The next segment's real pool: per class, sorted train indices kept by the filter."""
    pools = []
    for idx in class_index:
        correct = idx[outcome.correct[idx]]
        wrong = idx[~outcome.correct[idx]]
        if drop_order == "confident":
            # most confident first; stable sort so ties keep index order (determinism)
            order = torch.argsort(-outcome.confidence[correct], stable=True)
        else:
            order = torch.randperm(len(correct), generator=generator)
        correct = correct[order]
        n_drop = int(round(drop * len(correct)))
        kept_correct = correct[n_drop:]
        shortfall = min_per_class - (len(wrong) + len(kept_correct))
        if shortfall > 0:  # give back the dropped images closest to the kept ones
            n_drop = max(0, n_drop - shortfall)
            kept_correct = correct[n_drop:]
        pools.append(torch.sort(torch.cat([wrong, kept_correct])).values)
    return pools
