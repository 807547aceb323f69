"""``exdistill``: argv → config → library call → table. The only place that prints or exits."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from exdistill import __version__
from exdistill.config import load_yaml, merge, parse_overrides
from exdistill.errors import ExdistillError
from exdistill.memory import report_peak_at_exit
from exdistill.precision import DEFAULT_PRECISION

MAIN_DEFAULT_OUT = "runs/edd-digits-ipc10"
PRECISION_HELP = (
    "auto (default: bf16 where the device runs it fast, CUDA or a CPU with AMX-BF16 or "
    "AVX512-BF16 on images of at least 28×28, else fp32), fp32 or bf16; every loop of the run"
)


# ----------------------------------------------------------------------------- output helpers
@contextlib.contextmanager
def tqdm_progress(total: int, desc: str) -> Iterator[Any]:
    from tqdm.auto import tqdm

    with tqdm(
        total=total or None,
        desc=desc,
        unit="step",
        dynamic_ncols=True,
        leave=False,
        file=sys.stderr,
        mininterval=0.5,
    ) as bar:
        yield bar


def fmt_acc(d: dict[str, Any] | None) -> str:
    if not d:
        return "—"
    return f"{100 * d['test_acc_mean']:.2f} ± {100 * d['test_acc_std']:.2f}"


def print_table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
    print(line)
    print("-+-".join("-" * w for w in widths))
    for row in rows:
        print(" | ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))


def print_distill_summary(metrics: dict[str, Any], out: Path) -> None:
    ipc, n = metrics["ipc"], len(metrics["test_accs"])
    rows = [(metrics["method"], str(ipc), fmt_acc(metrics), "test")]
    base = metrics.get("baselines", {})
    if base:
        rows.append(("random subset", str(ipc), fmt_acc(base.get("random")), "test"))
        rows.append(("full data", "all", fmt_acc(base.get("full")), "test"))
    print(f"\n{metrics['dataset']}, protocol {metrics['protocol']}, {n} repeats, accuracy %")
    print_table(rows, ("method", "ipc", "accuracy (mean ± std)", "split"))
    for seg in metrics.get("segments", []):
        if seg.get("eval"):
            print(
                f"  after segment {seg['segment']} (ipc {seg['cumulative_ipc']}): "
                f"{fmt_acc(seg['eval'])}"
            )
    sim = metrics.get("update_similarity", {}).get("mean")
    if sim is not None:
        print(f"update similarity (mean pairwise cosine of image updates): {sim:.3f}")
    print(f"\nwrote {out}/ (synthetic/, grid.png, metrics.json, report.md)")


# ----------------------------------------------------------------------------- commands
def _run_config(args: argparse.Namespace, **fixed: Any):
    from exdistill.pipeline import RunConfig

    data: dict[str, Any] = {}
    if getattr(args, "config", None):
        data = load_yaml(args.config)
    unknown = set(data) - {"run", "method"}
    if unknown:
        from exdistill.errors import ConfigError

        raise ConfigError(f"unknown config section(s) {sorted(unknown)} (use 'run' and 'method')")
    overrides = parse_overrides(args.set or [])
    bad = set(overrides) - {"run", "method"}
    if bad:
        from exdistill.errors import ConfigError

        raise ConfigError(f"--set keys start with 'run.' or 'method.', got {sorted(bad)}")
    run = merge(RunConfig(), data.get("run", {}) or {}, prefix="run.")
    flags = {k: v for k, v in fixed.items() if v is not None}
    run = merge(run, flags, prefix="run.")
    run = merge(run, overrides.get("run", {}), prefix="run.")
    method = {**(data.get("method") or {})}
    method = _deep_update(method, overrides.get("method", {}))
    return run, method


def _deep_update(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = (
            _deep_update(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
        )
    return out


def _distill_and_report(
    run,
    method: dict[str, Any],
    out: Path,
    overwrite: bool,
    resume: bool = False,
    tsne: bool = True,
) -> None:
    from exdistill.distributed import Dist
    from exdistill.pipeline import distill, no_progress
    from exdistill.report import write_report

    # Under torchrun: one of several processes (docs/scale.md); rank 0 alone writes and prints.
    dist = Dist.from_env(run.device)
    if dist.enabled and str(run.device).startswith("cpu"):
        _share_cores(dist)
    progress = tqdm_progress if dist.is_main else no_progress
    outcome = distill(
        run, method, out, overwrite=overwrite, progress=progress, resume=resume, dist=dist
    )
    if dist.is_main:
        write_report(out, tsne=tsne)
        print_distill_summary(outcome.metrics, out)
    dist.close()


def _share_cores(dist) -> None:
    """Cap each rank's threads at its share of the machine's cores (``Dist.cpu_threads``)."""
    import torch

    from exdistill.distributed import usable_cpus

    requested, cpus = torch.get_num_threads(), usable_cpus()
    threads = dist.cpu_threads(requested, cpus)
    if threads < requested:
        torch.set_num_threads(threads)
        if dist.is_main:
            print(
                f"exdistill: {dist.local_world} processes on {cpus} cores: {threads} thread(s) "
                f"each, not {requested} (more threads than cores spin against each other)",
                file=sys.stderr,
            )


def cmd_run(args: argparse.Namespace) -> None:
    from exdistill.pipeline import RunConfig

    main_job = RunConfig()  # the main job is RunConfig's defaults: EDD, digits, ipc 10, quick
    run, method = _run_config(
        args,
        method=main_job.method,
        dataset=main_job.dataset,
        ipc=main_job.ipc,
        preset=main_job.preset,
        seed=args.seed,
        device=args.device,
        repeats=args.repeats,
        precision=args.precision,
    )
    run, method = _resumed_config(args, run, method)
    _distill_and_report(run, method, *_out_and_resume_flags(args))


def cmd_distill(args: argparse.Namespace) -> None:
    run, overrides = _run_config(
        args,
        method=args.method,
        dataset=args.dataset,
        data_dir=args.data_dir,
        ipc=args.ipc,
        preset=args.preset,
        seed=args.seed,
        device=args.device,
        repeats=args.repeats,
        protocol=args.protocol,
        models=tuple(args.models.split(",")) if args.models else None,
        baselines=False if args.no_baselines else None,
        precision=args.precision,
        ars=True if args.ars else None,
    )
    overrides = _deep_update(_method_flags(args, run.method), overrides)
    run, overrides = _resumed_config(args, run, overrides)
    _distill_and_report(run, overrides, *_out_and_resume_flags(args), tsne=not args.no_tsne)


def _method_options() -> dict[str, tuple[Any, list[str]]]:
    """Every registered method's own flags: flag → (``CliOption``, the methods declaring it)."""
    from exdistill.methods import METHODS

    out: dict[str, tuple[Any, list[str]]] = {}
    for name in METHODS.names():
        for option in METHODS.get(name).options:
            out.setdefault(option.flag, (option, []))[1].append(name)
    return out


def _method_flags(args: argparse.Namespace, method: str) -> dict[str, Any]:
    """The method config values set by method-declared flags; a flag the chosen method does
    not declare is an error."""
    values: dict[str, Any] = {}
    for flag, (option, owners) in _method_options().items():
        value = getattr(args, flag.lstrip("-").replace("-", "_"), None)
        if value is None:
            continue
        if method not in owners:
            from exdistill.errors import ConfigError

            raise ConfigError(f"{flag} applies to --method {', '.join(owners)} only")
        values[option.key] = value
    return values


def cmd_evaluate(args: argparse.Namespace) -> None:
    from exdistill.pipeline import evaluate_dir

    models = args.models.split(",") if args.models else ["convnet"]
    metrics = evaluate_dir(
        args.synset,
        args.out,
        args.protocol,
        args.repeats,
        args.seed,
        models,
        args.data_dir,
        args.device,
        args.overwrite,
        tqdm_progress,
        precision=args.precision,
    )
    rows = [(m, fmt_acc(r), "test") for m, r in metrics["models"].items()]
    print(
        f"\n{metrics['dataset']} ipc {metrics['ipc']}, protocol {metrics['protocol']}, "
        f"{args.repeats} repeats, accuracy %"
    )
    print_table(rows, ("model", "accuracy (mean ± std)", "split"))
    print(f"\nwrote {args.out}/metrics.json")


def cmd_baseline(args: argparse.Namespace) -> None:
    from exdistill.pipeline import run_baseline

    metrics = run_baseline(
        args.kind,
        args.dataset,
        args.data_dir,
        args.ipc,
        args.protocol,
        args.repeats,
        args.seed,
        args.out,
        args.model,
        args.device,
        args.overwrite,
        tqdm_progress,
        use_cache=not args.no_cache,
        precision=args.precision,
    )
    ipc = str(args.ipc) if args.kind == "random" else "all"
    print(f"\n{args.dataset}, protocol {args.protocol}, {args.repeats} repeats, accuracy %")
    print_table(
        [(args.kind, ipc, fmt_acc(metrics), "test")],
        ("baseline", "ipc", "accuracy (mean ± std)", "split"),
    )
    print(f"\nwrote {args.out}/metrics.json")


def cmd_show(args: argparse.Namespace) -> None:
    from exdistill.synthetic import SyntheticSet

    syn = SyntheticSet.load(args.synset)
    out = Path(args.out) if args.out else Path(args.synset) / "grid.png"
    syn.grid(out)
    if args.export:
        syn.export_imagefolder(args.export)
        print(f"exported decoded images to {args.export}/train/<class>/")
    print(f"wrote {out}")


def cmd_datasets(args: argparse.Namespace) -> None:
    from exdistill.data.load import describe_datasets

    rows = []
    for d in describe_datasets():
        rows.append(
            (
                d["name"],
                d.get("location") or "(pass --data-dir)",
                "yes" if d["found"] else "no",
                d["description"],
            )
        )
    print_table(rows, ("dataset", "looks in", "found", "description"))


def cmd_report(args: argparse.Namespace) -> None:
    from exdistill.report import write_report

    path = write_report(Path(args.run_dir), compare=[Path(d) for d in args.compare])
    print(f"wrote {path}")


def cmd_bench(args: argparse.Namespace) -> None:
    from tqdm.auto import tqdm

    from exdistill.bench import SUITES, parse_only, plan, run_suite
    from exdistill.errors import ConfigError

    suite = SUITES.get(args.suite)
    only = parse_only(args.only)
    if args.eval_repeats is not None and not args.eval_protocol:
        raise ConfigError("--eval-repeats applies to --eval-protocol only; the suite sets its own")
    data_dirs = {}
    for item in args.data or []:
        key, sep, path = item.partition("=")
        if not sep or not path:
            raise ConfigError(f"--data expects KEY=PATH, got '{item}'")
        data_dirs[key] = path
    if args.dry_run:
        for cell in plan(suite, only):
            print(cell.key)
        return
    bar: list[Any] = []

    def cells_progress(cells):
        with tqdm(cells, desc=f"bench {suite.name}", unit="cell") as it:
            bar.append(it)
            yield from it

    records = run_suite(
        suite,
        args.out,
        only,
        args.resume,
        data_dirs,
        args.data_root,
        args.device,
        echo=lambda line: bar[0].write(line) if bar else print(line),
        cells_progress=cells_progress,
        compute=not args.report,
        jobs=args.jobs,
        eval_protocol=args.eval_protocol,
        eval_repeats=args.eval_repeats,
    )
    done = sum(r.status == "done" for r in records)
    where = Path(args.out) / "protocols" / args.eval_protocol if args.eval_protocol else args.out
    print(f"\n{done}/{len(records)} cells done; wrote {where}/results.md, results.json")


def cmd_experts(args: argparse.Namespace) -> None:
    from exdistill.data import load_dataset
    from exdistill.experts import resolve_expert_config, train_experts

    flags: dict[str, Any] = {"model": args.model, "num_experts": args.num_experts}
    flags = {k: v for k, v in flags.items() if v is not None}
    if args.epochs is not None:
        flags["train"] = {"epochs": args.epochs}
    overrides = _deep_update(flags, parse_overrides(args.set or []))
    cfg = resolve_expert_config(args.preset, args.dataset, args.protocol, overrides)
    dataset = load_dataset(args.dataset, args.data_dir)
    summary = train_experts(
        dataset, cfg, args.out, args.seed, args.resume, args.device, tqdm_progress
    )
    accs = [a for a in summary.val_accs if a is not None]
    mean = f"{100 * sum(accs) / len(accs):.2f}" if accs else "—"
    print(f"\n{args.dataset}: {cfg.num_experts} experts × {cfg.epochs} epochs ({cfg.model})")
    print_table(
        [(str(summary.trained), str(summary.skipped), str(summary.repaired), mean)],
        ("files written", "kept (verified)", "repaired", "val accuracy %, mean"),
    )
    print(f"\nwrote {args.out}/ (manifest.json, expert_*/epoch_*.safetensors)")


def cmd_methods(args: argparse.Namespace) -> None:
    from exdistill.methods import METHODS

    print_table(
        [(n, METHODS.get(n).description) for n in METHODS.names()], ("method", "description")
    )


# ----------------------------------------------------------------------------- parser
def _common(
    p: argparse.ArgumentParser,
    out_default: str | None = None,
    resume: bool = False,
    run_config: bool = False,
) -> None:
    """Flags every command shares. ``run_config``: the command builds a RunConfig, so unset
    ``--seed``/``--device`` fall back to ``--config``'s run section, then RunConfig's."""
    default_seed, default_device = (None, None) if run_config else (0, "cpu")
    p.add_argument(
        "--seed", type=int, default=default_seed, help="fixes every random draw (default 0)"
    )
    p.add_argument("--device", default=default_device, help="torch device (default cpu)")
    p.add_argument(
        "--out",
        required=out_default is None and not resume,
        default=out_default,
        help="output directory" + (f" (default {out_default})" if out_default else ""),
    )
    either = p.add_mutually_exclusive_group() if resume else p
    either.add_argument(
        "--overwrite", action="store_true", help="replace an existing run directory"
    )
    if resume:
        either.add_argument(
            "--resume",
            nargs="?",
            const=True,
            default=False,
            metavar="RUN_DIR",
            help="continue a killed run from its last checkpoint (same config): "
            "RUN_DIR, or the --out directory",
        )


def _resumed_config(args: argparse.Namespace, run: Any, method: dict[str, Any]):
    """``--resume RUN_DIR``: the run's own resolved config (config.yaml) replaces the flags."""
    if not isinstance(args.resume, str):
        return run, method
    from exdistill.config import merge as merge_config
    from exdistill.errors import ConfigError
    from exdistill.pipeline import RunConfig

    if args.set or getattr(args, "config", None):
        raise ConfigError("--resume RUN_DIR takes the run's own config; drop --set/--config")
    data = load_yaml(Path(args.resume) / "config.yaml")
    return merge_config(RunConfig(), data.get("run") or {}, prefix="run."), data.get("method") or {}


def _out_and_resume_flags(args: argparse.Namespace) -> tuple[Path, bool, bool]:
    out, resume = _out_and_resume(args)
    return out, args.overwrite, resume


def _out_and_resume(args: argparse.Namespace) -> tuple[Path, bool]:
    """``--resume RUN_DIR`` names the run directory; a bare ``--resume`` uses ``--out``."""
    from exdistill.errors import ConfigError

    resume = args.resume
    if isinstance(resume, str):
        if args.out and Path(args.out) != Path(resume) and args.out != MAIN_DEFAULT_OUT:
            raise ConfigError(f"--resume {resume} and --out {args.out} name different runs")
        return Path(resume), True
    if not args.out:
        raise ConfigError("--out is required (or --resume RUN_DIR)")
    return Path(args.out), bool(resume)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="exdistill", description="Dataset distillation with EDD and the methods it builds on."
    )
    parser.add_argument("--version", action="version", version=f"exdistill {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="the main job: EDD over IDC on built-in digits, ipc 10")
    _common(p, MAIN_DEFAULT_OUT, resume=True, run_config=True)
    p.add_argument("--repeats", type=int, help="evaluation networks (default 3)")
    p.add_argument("--precision", help=PRECISION_HELP)
    p.add_argument("--config", help="YAML file with 'run:' and 'method:' sections")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override, e.g. --set method.reg_weight=0.1 --set run.repeats=5",
    )
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("distill", help="distill a dataset with one method, then evaluate it")
    # Unset flags fall back to --config's run section, then to RunConfig's defaults.
    p.add_argument("--method", help="default edd")
    p.add_argument("--dataset", help="default digits")
    p.add_argument("--data-dir")
    p.add_argument("--ipc", type=int, help="default 10")
    p.add_argument("--preset", help="quick (CPU budget, the default) or paper")
    p.add_argument("--protocol", help="evaluation protocol (default: the method's, quick or not)")
    p.add_argument("--repeats", type=int, help="evaluation networks (default 3)")
    p.add_argument("--precision", help=PRECISION_HELP)
    p.add_argument("--models", help="comma-separated evaluation networks (cross-architecture)")
    p.add_argument("--no-baselines", action="store_true", help="skip random/full baselines")
    p.add_argument(
        "--ars",
        action="store_true",
        help="also evaluate without augmentation for DD-Ranking's ARS (a second evaluation)",
    )
    p.add_argument(
        "--no-tsne",
        action="store_true",
        help="leave the t-SNE plot out of report.md (it trains a network on the real data)",
    )
    for option, _ in _method_options().values():
        p.add_argument(option.flag, type=option.type, help=option.help)
    p.add_argument("--config", help="YAML file with 'run:' and 'method:' sections")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override, e.g. --set method.lr_img=0.01",
    )
    _common(p, resume=True, run_config=True)
    p.set_defaults(func=cmd_distill)

    p = sub.add_parser("evaluate", help="train fresh networks on a saved synthetic set")
    p.add_argument("synset", help="directory with synthetic.safetensors and synthetic.json")
    p.add_argument("--protocol", default="idc-quick")
    p.add_argument("--models", help="comma-separated networks, e.g. convnet,resnet10_ap")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--data-dir")
    p.add_argument("--precision", default=DEFAULT_PRECISION, help=PRECISION_HELP)
    _common(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("baseline", help="random-subset or full-data accuracy")
    p.add_argument("kind", choices=["random", "full"])
    p.add_argument("--dataset", default="digits")
    p.add_argument("--data-dir")
    p.add_argument("--ipc", type=int, default=10)
    p.add_argument("--protocol", default="idc-quick")
    p.add_argument("--model", help="network (default: the protocol's)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-cache", action="store_true", help="recompute even if cached")
    p.add_argument("--precision", default=DEFAULT_PRECISION, help=PRECISION_HELP)
    _common(p)
    p.set_defaults(func=cmd_baseline)

    p = sub.add_parser("show", help="write the PNG grid of a saved synthetic set")
    p.add_argument("synset")
    p.add_argument("--out", help="PNG path (default SYNSET/grid.png)")
    p.add_argument("--export", help="also export decoded images as an ImageFolder here")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("datasets", help="list datasets and whether their files are found")
    p.set_defaults(func=cmd_datasets)

    p = sub.add_parser("experts", help="train expert trajectories on real data (for mtt)")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--data-dir")
    p.add_argument("--num-experts", type=int, help="default: the preset's (paper 100)")
    p.add_argument("--epochs", type=int, help="epochs per expert (default: the preset's; paper 50)")
    p.add_argument("--model", help="network (default convnet)")
    p.add_argument(
        "--protocol",
        default="mtt",
        help="training recipe: mtt (MTT's: SGD 0.01, no momentum, batch 256, DSA) or the "
        "recipe of an evaluation protocol",
    )
    p.add_argument("--preset", default="quick", help="quick (CPU budget) or paper")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override, e.g. --set model_options.width=128 --set train.batch_size=128",
    )
    p.add_argument("--seed", type=int, default=0, help="fixes every random draw (default 0)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the experts in --out: verified files are kept, the rest is trained",
    )
    p.set_defaults(func=cmd_experts)

    p = sub.add_parser("methods", help="list distillation methods")
    p.set_defaults(func=cmd_methods)

    p = sub.add_parser("bench", help="run a benchmark suite (datasets × ipc × methods), resumable")
    from exdistill.bench.suites import SUITES  # cheap: the suite table, no cells run

    p.add_argument(
        "--suite", default="smoke", help=f"one of {', '.join(SUITES.names())} (default smoke)"
    )
    p.add_argument("--out", required=True, help="suite directory")
    p.add_argument("--resume", action="store_true", help="continue the suite in --out")
    p.add_argument("--only", help="restrict cells, e.g. method=dc+idc,dataset=digits,ipc=1+10")
    p.add_argument(
        "--data",
        action="append",
        metavar="KEY=PATH",
        help="where a dataset's files are, e.g. cifar10-jpeg=/data/cifar10-jpeg",
    )
    p.add_argument(
        "--data-root", help="folder holding fashion-mnist/, cifar10-jpeg/, cifar-10-batches-py/"
    )
    p.add_argument("--device", default="cpu", help="torch device for every cell")
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        metavar="N",
        help="cells run at a time, each with OMP_NUM_THREADS = cores // N unless set (default 1)",
    )
    p.add_argument("--dry-run", action="store_true", help="list the cells and stop")
    p.add_argument(
        "--eval-protocol",
        help="evaluate the finished sets in --out again under this protocol (e.g. idc), with "
        "random and full rows under it; writes OUT/protocols/P/ (resumable with --resume)",
    )
    p.add_argument("--eval-repeats", type=int, help="networks per set with --eval-protocol")
    p.add_argument(
        "--report", action="store_true", help="rewrite results.* from finished cells, run nothing"
    )
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("report", help="write plots and report.md for a run directory")
    p.add_argument("run_dir")
    p.add_argument(
        "--compare",
        nargs="+",
        default=[],
        metavar="RUN_DIR",
        help="EDD runs to show beside this one in the forgetting plot and table (e.g. λ = 0)",
    )
    p.set_defaults(func=cmd_report)
    return parser


def tune_allocator() -> None:
    """Keep freed activations in glibc's heap instead of returning them to the OS each step.

    Evidence (benchmarks/matching_speed.py, CIFAR shape, 1 thread): system time 10.0 → 3.2 s,
    matching step −12 %. The same as GLIBC_TUNABLES=glibc.malloc.trim_threshold=4294967296:
    glibc.malloc.mmap_threshold=33554432:glibc.malloc.top_pad=268435456. No-op off glibc.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    mallopt(m_trim_threshold, (1 << 31) - 1)  # mallopt takes a C int
    mallopt(m_mmap_threshold, 32 << 20)
    mallopt(m_top_pad, 256 << 20)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    tune_allocator()
    report_peak_at_exit()
    try:
        args.func(args)
    except ExdistillError as err:
        print(f"exdistill: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("exdistill: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
