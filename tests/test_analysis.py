"""The paper's analyses (update similarity, t-SNE, forgetting, accuracy vs ipc) and the report."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from exdistill.analysis import (
    accuracy_vs_ipc,
    forgetting_table,
    tsne_embedding,
    update_similarity,
)
from exdistill.errors import DataError
from exdistill.io import append_jsonl, write_json, write_text
from exdistill.report import plot_similarity, write_report
from exdistill.scores import dd_ranking_scores
from exdistill.train import TrainConfig


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ----------------------------------------------------------------------------- update similarity
def test_identical_updates_have_similarity_one() -> None:
    labels = torch.tensor([0, 0, 0, 1, 1])
    initial = torch.randn(5, 1, 8, 8, generator=gen(0))
    deltas = torch.randn(2, 1, 8, 8, generator=gen(1))
    scale = torch.tensor([1.0, 2.0, 0.5, 3.0, 0.1])[:, None, None, None]  # cosine ignores length
    final = initial + scale * deltas[labels]
    sim = update_similarity(initial, final, labels)
    assert sim["per_class"] == pytest.approx([1.0, 1.0])
    assert sim["mean"] == pytest.approx(1.0)


def test_random_updates_are_nearly_orthogonal() -> None:
    labels = torch.arange(3).repeat_interleave(6)
    initial = torch.randn(18, 3, 16, 16, generator=gen(0))  # 768 dimensions
    final = initial + torch.randn(18, 3, 16, 16, generator=gen(1))
    sim = update_similarity(initial, final, labels)
    # pairwise cosines of random 768-d vectors have std 1/√768 ≈ 0.036
    assert all(abs(v) < 0.05 for v in sim["per_class"])
    assert abs(sim["mean"]) < 0.05


def test_opposite_updates_and_mean_over_pairs() -> None:
    labels = torch.tensor([0, 0, 1, 1, 1])
    initial = torch.zeros(5, 1, 2, 2)
    e1, e2 = torch.tensor([1.0, 0, 0, 0]), torch.tensor([0, 1.0, 0, 0])
    final = torch.stack([e1, -e1, e1, e1, e2]).reshape(5, 1, 2, 2)
    sim = update_similarity(initial, final, labels)
    # class 1: pairs (e1, e1) = 1, (e1, e2) = 0 twice → mean 1/3
    assert sim["per_class"] == pytest.approx([-1.0, 1 / 3])
    assert sim["mean"] == pytest.approx((-1 + 1 / 3) / 2)


def test_single_images_give_none_and_are_left_out_of_the_mean() -> None:
    labels = torch.tensor([0, 1, 1, 2])
    initial = torch.zeros(4, 1, 2, 2)
    final = torch.ones(4, 1, 2, 2)
    sim = update_similarity(initial, final, labels)
    assert sim["per_class"][0] is None and sim["per_class"][2] is None
    assert sim["per_class"][1] == pytest.approx(1.0) and sim["mean"] == pytest.approx(1.0)
    alone = update_similarity(initial[:2], final[:2], torch.tensor([0, 1]))
    assert alone == {"mean": None, "per_class": [None, None]}
    json.dumps(sim)  # plain floats and None: goes straight into metrics.json


def test_unchanged_images_do_not_give_nan() -> None:
    x = torch.randn(3, 1, 4, 4, generator=gen(0))
    sim = update_similarity(x, x.clone(), torch.zeros(3, dtype=torch.long))
    assert sim["mean"] == 0.0 and not math.isnan(sim["per_class"][0])


# ----------------------------------------------------------------------------- tables
SEGMENTS = [
    {
        "segment": 0,
        "ipc": 5,
        "cumulative_ipc": 5,
        "iterations": 15,
        "real_per_class": [120, 118],
        "filter_train_acc": 0.8,
        "filter_val_acc": 0.75,
        "forgotten": None,
        "eval": {"test_acc_mean": 0.6, "test_acc_std": 0.02},
    },
    {
        "segment": 1,
        "ipc": 5,
        "cumulative_ipc": 10,
        "iterations": 15,
        "real_per_class": [40, 52],
        "forgotten": 12,
    },
]
FINAL = {"test_acc_mean": 0.7, "test_acc_std": 0.01}


def test_accuracy_vs_ipc() -> None:
    assert accuracy_vs_ipc(SEGMENTS, FINAL) == [(5, 0.6, 0.02), (10, 0.7, 0.01)]
    assert accuracy_vs_ipc(SEGMENTS, None) == [(5, 0.6, 0.02)]
    assert accuracy_vs_ipc([], FINAL) == []  # no segments (a plain method): nothing to plot


def test_forgetting_table() -> None:
    assert forgetting_table(SEGMENTS) == [(0, None), (1, 12)]
    assert forgetting_table([]) == []


# ----------------------------------------------------------------------------- t-SNE
def test_tsne_embedding_shapes() -> None:
    from exdistill.data import load_dataset

    digits = load_dataset("digits")
    syn = torch.randn(10, 1, 8, 8, generator=gen(0))
    quick = TrainConfig(epochs=1, max_steps=5, augment="", cutmix_prob=0.0)
    emb = tsne_embedding(digits, syn, real_per_class=4, feature_train=quick, model_options={})
    assert emb["points"].shape == (50, 2) and np.isfinite(emb["points"]).all()
    assert emb["is_synthetic"].tolist() == [False] * 40 + [True] * 10
    assert sorted(emb["real_labels"].tolist()) == sorted(list(range(10)) * 4)


# ----------------------------------------------------------------------------- report
def toy_run(directory: Path, **extra) -> Path:
    metrics = {
        "method": "edd",
        "dataset": "digits",
        "ipc": 10,
        "protocol": "idc-quick",
        "seed": 0,
        "test_acc_mean": 0.7,
        "test_acc_std": 0.01,
        "test_accs": [0.69, 0.71],
        "segments": SEGMENTS,
        "update_similarity": {"mean": 0.2, "per_class": [0.1, 0.3]},
        "baselines": {"random": {"test_acc_mean": 0.5, "test_acc_std": 0.03}},
        **extra,
    }
    write_json(directory / "metrics.json", metrics)
    for seg in (0, 1):
        for i in range(3):
            append_jsonl(directory / "log.jsonl", {"segment": seg, "match_loss": 10.0 / (i + 1)})
    return directory


def test_write_report_draws_every_plot_the_records_allow(tmp_path: Path) -> None:
    path = write_report(toy_run(tmp_path), tsne=False)
    assert path == tmp_path / "report.md"
    text = path.read_text()
    assert text.startswith("# edd on digits, ipc 10")
    assert "| edd | 10 | 70.00 ± 1.00 |" in text
    assert "| random subset | 10 | 50.00 ± 3.00 |" in text and "full data" not in text
    assert "| 0 | 5 | 15 | 118–120 | 80.0 | 75.0 | — | 60.00 ± 2.00 |" in text
    assert "| 1 | 5 | 15 | 40–52 | — | — | 12 | — |" in text
    assert "Update similarity (mean pairwise cosine of per-image updates): 0.200" in text
    for png in ("loss.png", "update_similarity.png", "accuracy_vs_ipc.png", "forgetting.png"):
        assert (tmp_path / png).is_file() and f"]({png})" in text
    assert not (tmp_path / "tsne.png").exists()


def test_report_shows_dd_ranking_scores_beside_the_accuracies(tmp_path: Path) -> None:
    baselines = {
        "random": {"test_acc_mean": 0.5, "test_acc_std": 0.03},
        "full": {"test_acc_mean": 0.9, "test_acc_std": 0.01},
    }
    scores = dd_ranking_scores(0.7, 0.5, 0.9)
    text = write_report(toy_run(tmp_path, baselines=baselines, **scores), tsne=False).read_text()
    assert "| method | ipc | test accuracy (%) | IOR (points) | HLR (points) | LRS |" in text
    assert "| edd | 10 | 70.00 ± 1.00 | +20.00 | 20.00 | 0.269 |" in text  # α = 0
    assert "| random subset | 10 | 50.00 ± 3.00 | — | — | — |" in text
    assert "| full data | all | 90.00 ± 1.00 | — | — | — |" in text


def test_report_with_nothing_to_compare(tmp_path: Path) -> None:
    sim = {"mean": None, "per_class": [None] * 10}  # ipc 1
    assert plot_similarity(sim, tmp_path / "s.png") is None
    path = write_report(toy_run(tmp_path, segments=[], update_similarity=sim), tsne=False)
    text = path.read_text()
    assert "## Segments" not in text and "Update similarity (" not in text
    assert not (tmp_path / "update_similarity.png").exists()


def test_report_needs_metrics(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="metrics.json: not found"):
        write_report(tmp_path)


def test_report_compares_forgetting_with_other_runs_labelled_by_lambda(tmp_path: Path) -> None:
    """``exdistill report RUN --compare RUN_λ0``: forgetting per segment with and without the
    regulariser in one plot and one table, each run labelled by its λ from config.yaml."""
    with_reg, without = toy_run(tmp_path / "edd"), tmp_path / "edd-lambda0"
    toy_run(without, segments=[SEGMENTS[0], {**SEGMENTS[1], "forgotten": 20}])
    write_text(with_reg / "config.yaml", "run: {method: edd}\nmethod: {reg_weight: 0.5}\n")
    write_text(without / "config.yaml", "run: {method: edd}\nmethod: {reg_weight: 0.0}\n")
    text = write_report(with_reg, tsne=False, compare=[without]).read_text()
    assert f"| λ 0.5 (`{with_reg}`) | —, 12 |" in text
    assert f"| λ 0 (`{without}`) | —, 20 |" in text
    assert (with_reg / "forgetting.png").is_file()
    with pytest.raises(DataError, match="not found"):
        write_report(with_reg, tsne=False, compare=[tmp_path / "missing"])
