"""The paper's analyses of a distilled set: update similarity, t-SNE, forgetting, accuracy vs ipc.

Each is a pure function of tensors and records; ``report.py`` draws them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from exdistill.data.base import ImageDataset
from exdistill.models import build_model
from exdistill.seeding import derive_seed, generator
from exdistill.train import TrainConfig, train_classifier


def update_similarity(
    initial: torch.Tensor, final: torch.Tensor, labels: torch.Tensor
) -> dict[str, Any]:
    """Per class, the mean pairwise cosine similarity of the updates (final − initial).

    Redundant synthetic images move the same way (similarity near 1); EDD's segments, distilled
    against different real data, should move more independently (lower similarity).

    Shape: initial, final ``(M, C, H, W)``; labels ``(M,)``.
    Returns ``{"mean": float, "per_class": [float | None, ...]}`` (None: fewer than 2 images).
    """
    updates = (final - initial).reshape(final.shape[0], -1).double()
    per_class: list[float | None] = []
    for c in range(int(labels.max()) + 1):
        u = updates[labels == c]
        if u.shape[0] < 2:
            per_class.append(None)
            continue
        u = u / u.norm(dim=1, keepdim=True).clamp_min(1e-12)
        sim = u @ u.T
        n = u.shape[0]
        per_class.append(float((sim.sum() - sim.diagonal().sum()) / (n * (n - 1))))
    valid = [v for v in per_class if v is not None]
    return {"mean": float(np.mean(valid)) if valid else None, "per_class": per_class}


def tsne_embedding(
    dataset: ImageDataset,
    synthetic: torch.Tensor,
    real_per_class: int = 50,
    seed: int = 0,
    feature_train: TrainConfig | None = None,
    model: str = "convnet",
    model_options: dict[str, Any] | None = None,
) -> dict[str, np.ndarray]:
    """2-D t-SNE of network features of synthetic images over a sample of real images.

    Features come from a network trained on the real training data (``feature_train``, a short
    recipe by default). Returns arrays ``points (n_real + n_syn, 2)``, ``is_synthetic``.
    """
    from sklearn.manifold import TSNE

    cfg = feature_train or TrainConfig(epochs=2, max_steps=300, cutmix_prob=0.0)
    net = build_model(
        model,
        dataset.channels,
        dataset.num_classes,
        dataset.image_size,
        generator=generator(seed, "tsne", "init"),
        **(model_options or {}),
    )
    x, y = dataset.normalized("train")
    train_classifier(net, x, y, cfg, generator(seed, "tsne", "train"))
    gen = generator(seed, "tsne", "sample")
    real_idx = torch.cat(
        [
            idx[torch.randperm(len(idx), generator=gen)[:real_per_class]]
            for idx in dataset.class_indices("train")
        ]
    )
    net.eval()
    with torch.no_grad():
        feats = torch.cat([net.embed(x[real_idx]), net.embed(synthetic)]).numpy()
    n = feats.shape[0]
    tsne = TSNE(
        n_components=2,
        perplexity=min(30.0, max(5.0, (n - 1) / 3)),
        init="pca",
        random_state=derive_seed(seed, "tsne") % (2**31),
    )
    points = tsne.fit_transform(feats)
    return {
        "points": points,
        "is_synthetic": np.r_[np.zeros(len(real_idx), bool), np.ones(synthetic.shape[0], bool)],
        "real_labels": y[real_idx].numpy(),
    }


def forgetting_table(segments: list[dict[str, Any]]) -> list[tuple[int, int | None]]:
    """(segment, forgotten count) from EDD's per-segment records."""
    return [(r["segment"], r.get("forgotten")) for r in segments]


def accuracy_vs_ipc(
    segments: list[dict[str, Any]], final: dict[str, Any] | None
) -> list[tuple[int, float, float]]:
    """(cumulative ipc, mean, std) after each segment; the last row is the final evaluation."""
    rows = []
    for r in segments:
        ev = r.get("eval")
        if ev:
            rows.append((r["cumulative_ipc"], ev["test_acc_mean"], ev["test_acc_std"]))
    if final and segments:
        rows.append((segments[-1]["cumulative_ipc"], final["test_acc_mean"], final["test_acc_std"]))
    return rows
