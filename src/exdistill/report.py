"""Plots and a Markdown report from a run directory (``exdistill report RUN_DIR``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from exdistill.analysis import accuracy_vs_ipc, forgetting_table, tsne_embedding  # noqa: E402
from exdistill.config import load_yaml  # noqa: E402
from exdistill.errors import DataError  # noqa: E402
from exdistill.io import atomic_write, read_jsonl, write_text  # noqa: E402
from exdistill.synthetic import SyntheticSet  # noqa: E402


def _save(fig, path: Path) -> str:
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=110, bbox_inches="tight"))
    plt.close(fig)
    return path.name


def plot_loss(log: list[dict[str, Any]], path: Path) -> str | None:
    rows = [r for r in log if "match_loss" in r]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(5, 3))
    for seg in sorted({r.get("segment", 0) for r in rows}):
        pts = [r["match_loss"] for r in rows if r.get("segment", 0) == seg]
        start = sum(1 for r in rows if r.get("segment", 0) < seg)
        ax.plot(range(start, start + len(pts)), pts, label=f"segment {seg}")
    ax.set(xlabel="outer iteration", ylabel="mean matching loss", yscale="log")
    ax.legend(fontsize=7)
    return _save(fig, path)


def plot_similarity(sim: dict[str, Any], path: Path) -> str | None:
    vals = [v if v is not None else np.nan for v in sim.get("per_class", [])]
    if not vals or sim.get("mean") is None:  # None: no class has two images (ipc 1)
        return None
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.bar(range(len(vals)), vals)
    ax.set(
        xlabel="class",
        ylabel="mean pairwise cosine of updates",
        title=f"update similarity (mean {sim['mean']:.3f})",
    )
    return _save(fig, path)


def plot_accuracy_vs_ipc(rows: list[tuple[int, float, float]], path: Path) -> str | None:
    if len(rows) < 2:
        return None
    x, m, s = zip(*rows, strict=True)
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.errorbar(x, 100 * np.array(m), yerr=100 * np.array(s), marker="o", capsize=3)
    ax.set(xlabel="cumulative ipc", ylabel="test accuracy (%)", title="accuracy after each segment")
    return _save(fig, path)


def plot_forgetting(
    series: list[tuple[str, list[tuple[int, int | None]]]], path: Path
) -> str | None:
    """Bars of real images forgotten per segment, one colour per run (label, rows)."""
    series = [(label, [(k, v) for k, v in rows if v is not None]) for label, rows in series]
    series = [(label, rows) for label, rows in series if rows]
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(5, 3))
    width = 0.8 / len(series)
    for i, (label, rows) in enumerate(series):
        x = np.array([k for k, _ in rows]) + (i - (len(series) - 1) / 2) * width
        ax.bar(x, [v for _, v in rows], width=width, label=label)
    if len(series) > 1:
        ax.legend(fontsize=7)
    ax.set_xticks(sorted({k for _, rows in series for k, _ in rows}))
    ax.set(xlabel="segment", ylabel="real images forgotten", title="forgetting per segment")
    return _save(fig, path)


def run_label(run_dir: Path) -> str:
    """A run's EDD regulariser weight as a label (``λ 0.5``), from its ``config.yaml``; its
    directory name where there is none."""
    config = Path(run_dir) / "config.yaml"
    if config.is_file():
        method = load_yaml(config).get("method") or {}
        if "reg_weight" in method:
            return f"λ {float(method['reg_weight']):g}"
    return Path(run_dir).name


def _metrics(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / "metrics.json"
    if not path.is_file():
        raise DataError(f"{path}: not found (is {run_dir} a finished run directory?)")
    return json.loads(path.read_text())


def plot_tsne(emb: dict[str, np.ndarray], segments: np.ndarray, path: Path) -> str:
    pts, syn = emb["points"], emb["is_synthetic"]
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.scatter(pts[~syn, 0], pts[~syn, 1], c=emb["real_labels"], cmap="tab10", s=6, alpha=0.3)
    for seg in np.unique(segments):
        sel = pts[syn][segments == seg]
        ax.scatter(
            sel[:, 0],
            sel[:, 1],
            s=28,
            marker="*",
            edgecolors="k",
            linewidths=0.3,
            label=f"segment {seg}",
        )
    ax.legend(fontsize=7)
    ax.set(title="t-SNE: real (dots, by class) and synthetic (stars, by segment)")
    ax.set_xticks([])
    ax.set_yticks([])
    return _save(fig, path)


def write_report(run_dir: Path, tsne: bool = True, compare: Sequence[Path] = ()) -> Path:
    """Draw every plot the run's records allow and write ``report.md``.

    ``compare``: other EDD runs (e.g. the same run with λ = 0) whose forgetting per segment is
    drawn and tabulated beside this run's, each labelled by its λ.
    """
    run_dir = Path(run_dir)
    metrics = _metrics(run_dir)
    log = read_jsonl(run_dir / "log.jsonl")
    figures: list[tuple[str, str]] = []

    def add(title: str, name: str | None) -> None:
        if name:
            figures.append((title, name))

    add("Matching loss", plot_loss(log, run_dir / "loss.png"))
    if metrics.get("update_similarity"):
        add(
            "Update similarity",
            plot_similarity(metrics["update_similarity"], run_dir / "update_similarity.png"),
        )
    segments = metrics.get("segments", [])
    add(
        "Accuracy vs cumulative ipc",
        plot_accuracy_vs_ipc(accuracy_vs_ipc(segments, metrics), run_dir / "accuracy_vs_ipc.png"),
    )
    forgetting = [(run_label(run_dir), forgetting_table(segments))]
    forgetting += [
        (run_label(d), forgetting_table(_metrics(d).get("segments", []))) for d in compare
    ]
    add("Forgetting", plot_forgetting(forgetting, run_dir / "forgetting.png"))
    if tsne and (run_dir / "synthetic").is_dir():
        add("t-SNE", _tsne_figure(run_dir))

    lines = [f"# {metrics['method']} on {metrics['dataset']}, ipc {metrics['ipc']}", ""]
    lines += [
        f"Protocol `{metrics['protocol']}`, {len(metrics['test_accs'])} evaluation "
        f"repeats, seed {metrics.get('seed', 0)}. Accuracies are on the **test** split "
        "(nothing was selected on it).",
        "",
    ]
    header, rule = "| method | ipc | test accuracy (%) |", "|---|---|---|"
    row = f"| {metrics['method']} | {metrics['ipc']} | {_acc(metrics)} |"
    # DD-Ranking's scores (exdistill.scores) belong to the distilled set's row; a run without
    # baselines has none, and its table keeps three columns.
    scored = all(k in metrics for k in ("ior", "hlr", "lrs"))
    unscored = ""
    if scored:
        header += " IOR (points) | HLR (points) | LRS |"
        rule += "---|---|---|"
        row += f" {100 * metrics['ior']:+.2f} | {100 * metrics['hlr']:.2f} | {metrics['lrs']:.3f} |"
        unscored = " — | — | — |"
    lines += [header, rule, row]
    for kind, label in (("random", "random subset"), ("full", "full data")):
        b = metrics.get("baselines", {}).get(kind)
        if b:
            where = metrics["ipc"] if kind == "random" else "all"
            lines.append(f"| {label} | {where} | {_acc(b)} |{unscored}")
    if scored:
        lines += [
            "",
            "IOR: improvement over the random subset; HLR: gap to full data; LRS: DD-Ranking's "
            "label-robust score in [0, 1], 0.269 where the set lies halfway between the random "
            "subset and full data (docs/benchmarks.md).",
        ]
    if segments:
        lines += [
            "",
            "## Segments",
            "",
            "| segment | ipc | iterations | real kept per class (min–max) | filter train acc "
            "| filter val acc | forgotten | test acc after segment |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for s in segments:
            kept = s["real_per_class"]
            lines.append(
                f"| {s['segment']} | {s['ipc']} | {s['iterations']} | {min(kept)}–{max(kept)} | "
                f"{_pct(s.get('filter_train_acc'))} | {_pct(s.get('filter_val_acc'))} | "
                f"{s.get('forgotten') if s.get('forgotten') is not None else '—'} | "
                f"{_acc(s.get('eval'))} |"
            )
    if compare:
        lines += ["", "## Forgetting beside other runs", ""]
        lines += ["| run | forgotten per segment |", "|---|---|"]
        for (label, rows), where in zip(forgetting, [run_dir, *compare], strict=True):
            counts = ", ".join("—" if v is None else str(v) for _, v in rows) or "—"
            lines.append(f"| {label} (`{where}`) | {counts} |")
    sim = metrics.get("update_similarity", {}).get("mean")
    if sim is not None:
        lines += ["", f"Update similarity (mean pairwise cosine of per-image updates): {sim:.3f}"]
    lines += [
        "",
        f"Distillation took {metrics.get('distill_seconds', 0):.0f} s, evaluation "
        f"{metrics.get('eval_seconds', 0):.0f} s. Every accuracy is in `metrics.json`.",
        "",
    ]
    lines += ["![synthetic images](grid.png)", ""]
    for title, name in figures:
        lines += [f"## {title}", "", f"![{title}]({name})", ""]
    return write_text(run_dir / "report.md", "\n".join(lines))


def _tsne_figure(run_dir: Path) -> str | None:
    from exdistill.data import load_dataset

    syn = SyntheticSet.load(run_dir / "synthetic")
    name = syn.dataset.get("name")
    config = run_dir / "config.yaml"
    data_dir = None
    if config.is_file():
        import yaml

        data_dir = (yaml.safe_load(config.read_text()) or {}).get("run", {}).get("data_dir")
    try:
        dataset = load_dataset(name, data_dir)
    except Exception:  # noqa: BLE001 - the report still renders without the t-SNE
        return None
    images, _ = syn.decoded()
    segments = syn.segments.repeat_interleave(syn.factor**2).numpy()
    emb = tsne_embedding(dataset, images, seed=int(syn.info.get("seed", 0)))
    return plot_tsne(emb, segments, run_dir / "tsne.png")


def load_initial(run_dir: Path):
    path = Path(run_dir) / "initial.safetensors"
    return load_file(str(path))["images"] if path.is_file() else None


def _acc(d: dict[str, Any] | None) -> str:
    if not d:
        return "—"
    return f"{100 * d['test_acc_mean']:.2f} ± {100 * d['test_acc_std']:.2f}"


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.1f}"
