"""End-to-end jobs composed from the library: distill → save → evaluate → baselines → report.

The CLI calls these; they never parse argv, print or exit. Progress goes through a
``progress(total, description)`` factory returning a context manager with ``update``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from exdistill import __version__
from exdistill.analysis import update_similarity
from exdistill.api import eval_protocol
from exdistill.baselines import baseline, baseline_steps
from exdistill.checkpoint import Checkpointer
from exdistill.config import config_hash, merge, require, to_dict
from exdistill.data import ImageDataset, load_dataset
from exdistill.data.load import cache_root
from exdistill.distributed import Dist, ReadOnlyCheckpointer
from exdistill.errors import ConfigError, DataError, NumericalError
from exdistill.evaluation import (
    PROTOCOLS,
    EvalResult,
    eval_steps,
    evaluate_images,
)
from exdistill.io import atomic_write, write_json
from exdistill.methods import METHODS, DistillContext, resolve_config
from exdistill.models.kernels import calls_since, kernel_calls
from exdistill.precision import (
    DEFAULT_PRECISION,
    PRECISIONS,
    autocast_scope,
    hardware_record,
    resolve_precision,
)
from exdistill.progress import ProgressFactory, no_progress
from exdistill.runs import (
    MARKER,
    MetricsLog,
    check_same_config,
    finish_run,
    prepare_run_dir,
    run_status,
    start_run,
    truncate_log,
)
from exdistill.scores import ars, dd_ranking_scores
from exdistill.synthetic import SyntheticSet


@dataclass
class RunConfig:
    """What to distill and how to judge it (the method's own config is separate)."""

    method: str = "edd"
    dataset: str = "digits"
    data_dir: str | None = None
    ipc: int = 10
    preset: str = "quick"
    seed: int = 0
    protocol: str = ""  # "" → the method's protocol family (+"-quick" with the quick preset)
    repeats: int = 3
    models: tuple[str, ...] = ()  # evaluation networks; () → the protocol's network
    baselines: bool = True  # also evaluate random subset and full data (cached)
    device: str = "cpu"
    val_fraction: float = 0.1
    # fp32 | bf16 | auto (bf16 where the device runs it fast): every loop of the run, the
    # evaluation and its baselines (exdistill.precision). auto since bf16's accuracy parity
    # held on validation (IDC, EDD, DM; Fashion-MNIST and CIFAR-10; docs/performance.md).
    precision: str = DEFAULT_PRECISION
    # Also evaluate the set and a random subset under the protocol without augmentation, for
    # DD-Ranking's ARS (needs baselines; costs a second evaluation and random baseline).
    ars: bool = False

    def validate(self) -> None:
        require(self.ipc >= 1, f"ipc: must be ≥ 1, got {self.ipc}")
        require(self.repeats >= 1, f"repeats: must be ≥ 1, got {self.repeats}")
        require(0 < self.val_fraction < 1, "val_fraction: must be in (0, 1)")
        require(not self.ars or self.baselines, "ars: needs the baselines (drop --no-baselines)")
        require(
            self.precision in PRECISIONS,
            f"precision: unknown '{self.precision}'; choose from: {', '.join(PRECISIONS)}",
        )
        METHODS.get(self.method)
        if self.protocol:
            PROTOCOLS.get(self.protocol)

    def resolved_protocol(self) -> str:
        if self.protocol:
            return self.protocol
        family = METHODS.get(self.method).protocol
        return f"{family}-quick" if self.preset == "quick" else family


def _check_model_fits(dataset: ImageDataset, models: list[str], options: dict) -> None:
    """Build each evaluation network once on a dummy batch: fail before any work."""
    from exdistill.errors import ConfigError
    from exdistill.models import build_model

    for name in models:
        try:
            net = build_model(name, dataset.channels, dataset.num_classes, dataset.image_size)
            net.eval()
            with torch.no_grad():
                net(torch.zeros(1, dataset.channels, *dataset.image_size))
        except ConfigError:
            raise
        except Exception as err:  # noqa: BLE001 - any failure here means "does not fit"
            raise ConfigError(
                f"models: '{name}' cannot take {dataset.channels}×{dataset.image_size[0]}×"
                f"{dataset.image_size[1]} images ({type(err).__name__}: {err})"
            ) from None


def _gather_eval(part: EvalResult, dist: Dist) -> EvalResult:
    """Every rank's repeats (rank r trained r, r+W, …) back in repeat order, on every rank."""
    if not dist.enabled:
        return part
    rows = dist.gather_strided(list(zip(part.test_accs, part.val_accs, part.seeds, strict=True)))
    return replace(
        part,
        test_accs=[r[0] for r in rows],
        val_accs=[r[1] for r in rows],
        seeds=[r[2] for r in rows],
        seconds=max(dist.gather_strided([part.seconds])),
    )


@dataclass
class DistillOutcome:
    synthetic: SyntheticSet
    metrics: dict[str, Any]
    records: dict[str, Any] = field(default_factory=dict)


def evaluate_set(
    syn: SyntheticSet,
    dataset: ImageDataset,
    protocol: str,
    repeats: int,
    seed: int,
    models: list[str],
    device: str,
    progress: ProgressFactory,
    dist: Dist | None = None,
) -> dict[str, EvalResult]:
    """Evaluate ``syn`` with each model; with ``dist``, the repeats are spread over the ranks
    and every rank returns all of them."""
    dist = dist or Dist()
    images, labels = syn.decoded()
    proto = eval_protocol(syn, protocol)
    results = {}
    for model in models:
        total = eval_steps(labels.shape[0], proto, repeats)
        with progress(total, f"evaluate {model}") as bar:
            part = evaluate_images(
                images,
                labels,
                dataset,
                proto,
                repeats,
                seed,
                model,
                device,
                bar,
                ranks=(dist.rank, dist.world),
            )
        results[model] = _gather_eval(part, dist)
    return results


def baselines_for(
    dataset: ImageDataset,
    ipc: int,
    protocol: str,
    repeats: int,
    seed: int,
    model: str,
    device: str,
    progress: ProgressFactory,
    precision: str = "fp32",
) -> dict[str, dict[str, Any]]:
    """The random-subset and full-data baselines (cached), computed at ``precision`` (the
    caller's autocast scope; it also keys the cache)."""
    args = (dataset, ipc, protocol, repeats, seed, model, device, progress)
    return {
        k: _baseline_with_bar(k, *args, label=f"baseline {k}", precision=precision)
        for k in ("random", "full")
    }


def _baseline_with_bar(
    kind: str,
    dataset: ImageDataset,
    ipc: int,
    protocol: str,
    repeats: int,
    seed: int,
    model: str,
    device: str,
    progress: ProgressFactory,
    *,
    label: str,
    use_cache: bool = True,
    precision: str = "fp32",
) -> dict[str, Any]:
    """One baseline's result as plain data, its training shown as a progress bar ``label``."""
    with progress(baseline_steps(kind, dataset, ipc, protocol, repeats), label) as bar:
        cache_dir = cache_root() if use_cache else None
        result = baseline(
            kind,
            dataset,
            ipc,
            protocol,
            repeats,
            seed,
            model,
            device,
            bar,
            cache_dir=cache_dir,
            precision=precision,
        )
    return result.to_dict()


def _augmentation_robustness(
    syn: SyntheticSet,
    dataset: ImageDataset,
    protocol: str,
    run: RunConfig,
    model: str,
    progress: ProgressFactory,
    precision: str,
    at_precision: Any,
) -> dict[str, Any]:
    """DD-Ranking's ARS: the set and a random subset evaluated again without augmentation."""
    noaug = f"{protocol}-noaug"
    with at_precision():
        syn_noaug = evaluate_set(
            syn, dataset, noaug, run.repeats, run.seed, [model], run.device, progress
        )[model]
        rdm_noaug = _baseline_with_bar(
            "random",
            dataset,
            run.ipc,
            noaug,
            run.repeats,
            run.seed,
            model,
            run.device,
            progress,
            label="baseline random (no augmentation)",
            precision=precision,
        )
    return {"no_augmentation": {"protocol": noaug, "synthetic": syn_noaug.to_dict(),
                                "random": rdm_noaug}}  # fmt: skip


def _discard(record: dict[str, Any]) -> None:
    """The metrics log of a rank other than 0 (only rank 0 writes files)."""


class _CountingLog:
    """The run's metrics log, counting its records so a checkpoint can say how many it covers."""

    def __init__(self, log: MetricsLog, count: int = 0) -> None:
        self.log, self.count = log, count

    def __call__(self, record: dict[str, Any]) -> None:
        self.log(record)
        self.count += 1


def _finished(out: Path) -> DistillOutcome:
    """A finished run, read back from disk (``--resume`` of a done run recomputes nothing)."""
    try:
        metrics = json.loads((out / "metrics.json").read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{out}/metrics.json: unreadable ({type(err).__name__})") from None
    records = {"segments": metrics["segments"]} if "segments" in metrics else {}
    return DistillOutcome(SyntheticSet.load(out / "synthetic"), metrics, records)


def distill(
    run: RunConfig,
    method_overrides: dict[str, Any],
    out: str | Path,
    overwrite: bool = False,
    progress: ProgressFactory = no_progress,
    resume: bool = False,
    dist: Dist | None = None,
) -> DistillOutcome:
    """Distill, save the set and its pictures, evaluate, and write ``metrics.json``.

    With ``dist`` (several processes, ``distributed.py``) every rank runs this; only rank 0
    writes files. Matching classes and evaluation repeats are spread over the ranks; the
    baselines run on rank 0 alone.

    With ``resume``, ``out`` must hold a run with the same resolved config: a finished one is
    read back as it is; an unfinished one continues from its checkpoint (or from the start if
    it had none), its ``log.jsonl`` cut back to the records the checkpoint covers, and ends
    with the same synthetic set as an uninterrupted run (bitwise on CPU).

    With ``run.baselines``, ``metrics.json`` also holds DD-Ranking's ``ior``, ``hlr`` and
    ``lrs`` (fractions, ``exdistill.scores``) of the first evaluation network's mean test
    accuracy against its random and full-data baselines; without baselines the three keys are
    absent.
    """
    # --- validate everything before any work or any write
    run.validate()
    if resume and overwrite:
        raise ConfigError("--resume continues the run in out; --overwrite would delete it")
    if resume:
        out = Path(out)
        status = run_status(out)
    else:
        out = prepare_run_dir(out, overwrite)
    dataset = load_dataset(run.dataset, run.data_dir, val_fraction=run.val_fraction)
    spec = METHODS.get(run.method)
    cfg = resolve_config(run.method, run.preset, run.dataset, run.ipc, method_overrides)
    protocol = run.resolved_protocol()
    proto = PROTOCOLS.get(protocol)
    models = list(run.models) or [proto.model]
    _check_model_fits(dataset, models, proto.model_options)
    device = torch.device(run.device)
    precision = resolve_precision(run.precision, device, image_size=dataset.image_size)
    at_precision = partial(autocast_scope, precision, device)
    per_ipc = spec.preflight(cfg, dataset, run.ipc, device)
    small = min(len(i) for i in dataset.class_indices("train"))
    require(
        small >= run.ipc * per_ipc,
        f"ipc: {run.ipc}"
        + (f" × factor² {per_ipc}" if per_ipc > 1 else "")
        + f" exceeds the {small} training images of the smallest class of {dataset.name}",
    )
    resolved = {"run": to_dict(run), "method": to_dict(cfg), "version": __version__}
    if run.precision == "auto":  # what auto chose here: a resume elsewhere must choose the same
        resolved["precision_resolved"] = precision
    dist = dist or Dist()
    require(
        dist.world == 1 or spec.distributed(cfg),
        f"method {run.method}: runs in one process only (it does not shard its work over "
        f"the {dist.world} ranks of this torchrun job); launch it without torchrun",
    )

    writes = dist.is_main  # rank 0: the only process that writes files
    dist.barrier()  # every rank validated ``out`` before rank 0 writes into it
    checkpoint = (Checkpointer if writes else ReadOnlyCheckpointer)(out / "checkpoint")
    resumed_at = None
    carried = 0.0  # seconds of distillation a resumed checkpoint already holds
    if resume:
        check_same_config(out, resolved)
        if status == "done":
            return _finished(out)
        loaded = checkpoint.load()  # DataError here, before any work, if it is damaged
        resumed_at = {k: loaded.meta.get(k) for k in ("segment", "iteration")} if loaded else {}
        carried = loaded.elapsed_seconds if loaded else 0.0
        if writes:
            truncate_log(out / "log.jsonl", loaded.log_records if loaded else 0)
            write_json(out / MARKER, {"status": "running", "resumed_at": resumed_at})
        log = _CountingLog(
            MetricsLog(out / "log.jsonl") if writes else _discard,
            loaded.log_records if loaded else 0,
        )
    else:
        if writes:
            start_run(out, resolved, overwrite)
        log = _CountingLog(MetricsLog(out / "log.jsonl") if writes else _discard)
    checkpoint.log_records = lambda: log.count
    dist.barrier()  # rank 0 (re)made the run directory before any rank reads a checkpoint

    def evaluate_partial(syn: SyntheticSet) -> dict[str, Any]:  # inside the run's scope
        res = evaluate_set(
            syn, dataset, protocol, run.repeats, run.seed, models[:1], run.device, progress, dist
        )
        return res[models[0]].to_dict()

    ctx = DistillContext(
        dataset,
        run.ipc,
        run.seed,
        device,
        log=log,
        evaluate=evaluate_partial,
        checkpoint=checkpoint,
        dist=dist,
    )
    t0, kernels_before = time.perf_counter(), kernel_calls()
    # Checkpoints store the distillation time so far: after a resume, distill_seconds is the
    # whole run's (the work between the last checkpoint and the kill is redone, counted once).
    checkpoint.elapsed = lambda: carried + time.perf_counter() - t0
    try:
        with progress(spec.steps(cfg, ctx), f"distill {run.method}") as bar:
            ctx.progress = bar
            with at_precision():
                result = spec.run(ctx, cfg)
    except NumericalError as err:
        message = f"{err}; {checkpoint.describe()}"
        if writes:
            write_json(out / MARKER, {"status": "failed", "error": message})
        raise NumericalError(message) from None
    distill_seconds = carried + time.perf_counter() - t0
    fused_calls = calls_since(kernels_before)
    cfg_hash = config_hash(cfg)  # MTT's reads its experts' manifest

    syn = result.synthetic
    syn.info.update(
        {
            "method": run.method,
            "config": to_dict(cfg),
            "config_hash": cfg_hash,
            "seed": run.seed,
            "preset": run.preset,
            "distill_seconds": round(distill_seconds, 2),
        }
    )
    if writes:
        syn.save(out / "synthetic")
        syn.grid(out / "grid.png")

    t1 = time.perf_counter()
    with at_precision():
        evals = evaluate_set(
            syn, dataset, protocol, run.repeats, run.seed, models, run.device, progress, dist
        )
    main = evals[models[0]].to_dict()
    metrics: dict[str, Any] = {
        "method": run.method,
        "dataset": run.dataset,
        "ipc": run.ipc,
        "protocol": protocol,
        "split": "test",
        "seed": run.seed,
        "preset": run.preset,
        "test_acc_mean": main["test_acc_mean"],
        "test_acc_std": main["test_acc_std"],
        "test_accs": main["test_accs"],
        "val_acc_mean": main["val_acc_mean"],
        "models": {m: r.to_dict() for m, r in evals.items()},
        "distill_seconds": round(distill_seconds, 2),
        "eval_seconds": round(time.perf_counter() - t1, 2),
        "config_hash": cfg_hash,
        # compiled calls of each fused CPU kernel while distilling (models.kernels), in this
        # process (rank 0; this session after a resume); 0: the layers ran PyTorch's own code
        # (small maps, CUDA); -1: compiling failed and the layers fell back to PyTorch's
        "fused_kernel_calls": fused_calls,
        **hardware_record(run.precision, precision),
        "library_version": __version__,
    }
    if result.initial_images is not None and not spec.selects_real:
        metrics["update_similarity"] = update_similarity(
            result.initial_images, syn.images, syn.labels
        )
    if resumed_at is not None:  # fused_kernel_calls: this process only
        metrics["resumed_at"] = resumed_at
    if result.records:
        metrics.update(result.records)
    if not writes:  # the rest (cached baselines, files) is rank 0's alone
        return DistillOutcome(syn, metrics, result.records)
    if run.baselines:
        with at_precision():
            metrics["baselines"] = baselines_for(
                dataset,
                run.ipc,
                protocol,
                run.repeats,
                run.seed,
                models[0],
                run.device,
                progress,
                precision,
            )
        # Scored against the baselines of the same protocol and network, the only ones they
        # may be compared with; no baselines, no scores (nothing to fill them with).
        accs = (
            metrics["test_acc_mean"],
            metrics["baselines"]["random"]["test_acc_mean"],
            metrics["baselines"]["full"]["test_acc_mean"],
        )
        if all(0.0 <= a <= 1.0 for a in accs):  # NaN (no test images) scores nothing
            metrics.update(dd_ranking_scores(*accs))
        if run.ars:
            robust = _augmentation_robustness(
                syn, dataset, protocol, run, models[0], progress, precision, at_precision
            )
            metrics.update(robust)
            noaug = (
                robust["no_augmentation"]["synthetic"]["test_acc_mean"],
                robust["no_augmentation"]["random"]["test_acc_mean"],
            )
            if all(0.0 <= a <= 1.0 for a in (*accs[:2], *noaug)):
                metrics["ars"] = ars(accs[0], accs[1], *noaug)
    if result.initial_images is not None:
        atomic_write(
            out / "initial.safetensors",
            # "order": image i is where image i of the synthetic set started (files without the
            # key hold EDD's starts segment by segment; benchmarks/update_similarity.py reads both)
            lambda p: save_file(
                {"images": result.initial_images.contiguous()}, str(p), metadata={"order": "final"}
            ),
        )
    finish_run(out, metrics)
    return DistillOutcome(syn, metrics, result.records)


def evaluate_dir(
    synset_dir: str | Path,
    out: str | Path,
    protocol: str,
    repeats: int,
    seed: int,
    models: list[str],
    data_dir: str | None,
    device: str,
    overwrite: bool = False,
    progress: ProgressFactory = no_progress,
    precision: str = DEFAULT_PRECISION,
) -> dict[str, Any]:
    """Evaluate a saved synthetic set (``exdistill evaluate``) at ``precision``."""
    syn = SyntheticSet.load(synset_dir)
    name = syn.dataset.get("name")
    if not name:
        from exdistill.errors import DataError

        raise DataError(f"{synset_dir}: the sidecar does not name its dataset")
    PROTOCOLS.get(protocol)
    out = prepare_run_dir(out, overwrite)
    dataset = load_dataset(name, data_dir)
    resolved = resolve_precision(precision, device, image_size=dataset.image_size)
    _check_model_fits(dataset, models, {})
    start_run(
        out,
        {
            "synset": str(synset_dir),
            "protocol": protocol,
            "repeats": repeats,
            "seed": seed,
            "models": models,
            "precision": precision,
        },
        overwrite,
    )
    t0 = time.perf_counter()
    with autocast_scope(resolved, device):
        evals = evaluate_set(syn, dataset, protocol, repeats, seed, models, device, progress)
    eval_seconds = round(time.perf_counter() - t0, 2)
    main = evals[models[0]].to_dict()
    metrics = {
        "synset": str(synset_dir),
        "method": syn.info.get("method"),
        "dataset": name,
        "ipc": syn.ipc,
        "protocol": protocol,
        "split": "test",
        "seed": seed,
        "test_acc_mean": main["test_acc_mean"],
        "test_acc_std": main["test_acc_std"],
        "test_accs": main["test_accs"],
        "models": {m: r.to_dict() for m, r in evals.items()},
        "eval_seconds": eval_seconds,
        **hardware_record(precision, resolved),
        "library_version": __version__,
    }
    finish_run(out, metrics)
    return metrics


def run_baseline(
    kind: str,
    dataset_name: str,
    data_dir: str | None,
    ipc: int,
    protocol: str,
    repeats: int,
    seed: int,
    out: str | Path,
    model: str | None,
    device: str,
    overwrite: bool = False,
    progress: ProgressFactory = no_progress,
    use_cache: bool = True,
    precision: str = DEFAULT_PRECISION,
) -> dict[str, Any]:
    """``exdistill baseline {random,full}``, at ``precision`` (``auto``: bf16 where it is fast)."""
    proto = PROTOCOLS.get(protocol)
    require(ipc >= 1, f"ipc: must be ≥ 1, got {ipc}")
    require(repeats >= 1, f"repeats: must be ≥ 1, got {repeats}")
    out = prepare_run_dir(out, overwrite)
    dataset = load_dataset(dataset_name, data_dir)
    resolved = resolve_precision(precision, device, image_size=dataset.image_size)
    model = model or proto.model
    _check_model_fits(dataset, [model], {})
    if kind == "random":
        small = min(len(i) for i in dataset.class_indices("train"))
        require(
            small >= ipc,
            f"ipc: {ipc} exceeds the {small} training images of the smallest "
            f"class of {dataset.name}",
        )
    start_run(
        out,
        {
            "baseline": kind,
            "dataset": dataset_name,
            "ipc": ipc,
            "protocol": protocol,
            "repeats": repeats,
            "seed": seed,
            "precision": precision,
        },
        overwrite,
    )
    args = (dataset, ipc, protocol, repeats, seed, model, device, progress)
    with autocast_scope(resolved, device):
        res = _baseline_with_bar(kind, *args, label=kind, use_cache=use_cache, precision=resolved)
    metrics = {
        "method": kind,
        "dataset": dataset_name,
        "ipc": ipc,
        "split": "test",
        **res,
        **hardware_record(precision, resolved),
        "library_version": __version__,
    }
    finish_run(out, metrics)
    return metrics


__all__ = ["RunConfig", "distill", "evaluate_dir", "merge", "run_baseline"]
