"""The suites as data: datasets, suites, their cells and which of them a run selects.

Nothing here runs anything; ``runner`` computes the cells and ``render`` reports them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exdistill.errors import ConfigError
from exdistill.registry import Registry

FULL = "full"  # the full-data row of a dataset (ipc 0 in its cell)
SELECTION = ("random",)  # rows computed by ``exdistill baseline`` instead of ``distill``


# ----------------------------------------------------------------------------- datasets
@dataclass(frozen=True)
class BenchDataset:
    """A dataset as the suite names it: the loader and where its files usually live."""

    key: str
    loader: str
    label: str
    subdir: str | None = None  # under --data-root; None: built in or the loader's default


BENCH_DATASETS: Registry[BenchDataset] = Registry("bench dataset")
for _ds in (
    BenchDataset("digits", "digits", "digits (8×8, built in)"),
    BenchDataset("fashion-mnist", "fashion-mnist", "Fashion-MNIST", "fashion-mnist"),
    BenchDataset("cifar10-jpeg", "imagefolder", "CIFAR-10 (JPEG)", "cifar10-jpeg"),
    BenchDataset("cifar10", "cifar10", "CIFAR-10", "cifar-10-batches-py"),
    BenchDataset("tiny-imagenet", "tiny-imagenet", "Tiny-ImageNet (parquet)", "tiny-imagenet"),
):
    BENCH_DATASETS.add(_ds.key, _ds)


def resolve_data_dir(
    key: str, data_dirs: dict[str, str], data_root: str | None
) -> tuple[str | None, str | None]:
    """``(data_dir, None)`` for a usable dataset, ``(None, reason)`` when its files are missing.

    Order: ``--data KEY=PATH``, then ``--data-root/<subdir>``, then the loader's default.
    """
    from exdistill.data.base import DATASETS

    ds = BENCH_DATASETS.get(key)
    spec = DATASETS.get(ds.loader)
    if key in data_dirs:
        path = Path(data_dirs[key]).expanduser()
        return (str(path), None) if path.exists() else (None, f"{path} not found")
    if not spec.needs_dir:
        return None, None
    if data_root and ds.subdir and (Path(data_root).expanduser() / ds.subdir).exists():
        return str(Path(data_root).expanduser() / ds.subdir), None
    if spec.default_dir and Path(spec.default_dir).expanduser().exists():
        return None, None
    return None, f"no data: pass --data {key}=PATH or --data-root DIR"


# ----------------------------------------------------------------------------- suites
@dataclass(frozen=True)
class Row:
    """A labelled row of a suite: a registered method with config values of its own (e.g.
    ``idc-x4``: IDC at four times the quick preset's rounds)."""

    method: str
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Suite:
    """A grid of cells and the one protocol that judges them all."""

    name: str
    datasets: tuple[str, ...]
    ipcs: tuple[int, ...]
    methods: tuple[str, ...]  # "random" = fresh random subsets (the baseline row)
    preset: str = "quick"
    protocol: str = "idc-quick"
    repeats: int = 3
    seed: int = 0
    method_ipcs: dict[str, tuple[int, ...]] = field(default_factory=dict)  # restricts a method
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # method config values
    full_data: bool = True  # add each dataset's full-data row
    description: str = ""
    rows: dict[str, Row] = field(default_factory=dict)  # labels in ``methods`` that are variants

    def row(self, label: str) -> tuple[str, dict[str, Any]]:
        """The registered method behind a row label and the config values its cells get (the
        suite's values for that method, then the row's own)."""
        row = self.rows.get(label, Row(label))
        return row.method, _deep_merge(self.overrides.get(row.method, {}), row.overrides)


def _deep_merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = (
            _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
        )
    return out


SUITES: Registry[Suite] = Registry("suite")
_ALL_METHODS = ("random", "herding", "dc", "dsa", "dm", "idc", "edd", "mtt")

SUITES.add(
    "smoke",
    Suite(
        "smoke",
        datasets=("digits",),
        ipcs=(1, 10),
        methods=_ALL_METHODS,
        protocol="idc-smoke",
        repeats=2,
        overrides={
            "dc": {"iterations": 2},
            "dsa": {"iterations": 2},
            "idc": {"iterations": 3},
            "edd": {"base_config": {"iterations": 4}, "filter": {"max_steps": 100}},
            "dm": {"iterations": 30},
            "mtt": {"iterations": 5},
            "herding": {"train": {"max_steps": 100}},
        },
        description="digits, ipc 1 and 10, every method with tiny budgets: an end-to-end check "
        "(under 10 minutes on 2 cores); accuracies mean little",
    ),
)
SUITES.add(
    "cpu",
    Suite(
        "cpu",
        datasets=("digits", "fashion-mnist", "cifar10-jpeg"),
        ipcs=(1, 10, 50),
        methods=_ALL_METHODS,
        # EDD at ipc 1 is one segment: its base, image for image (tested), so not recomputed.
        method_ipcs={"mtt": (1, 10), "edd": (10, 50)},
        # EDD's evaluations after each segment are an analysis, not part of the method.
        overrides={"edd": {"segment_evals": False}},
        description="digits, Fashion-MNIST, CIFAR-10 (JPEG) × ipc 1, 10, 50, quick presets, "
        "protocol idc-quick (ConvNet width 32, ≤1500 SGD steps), 3 repeats, 2 CPU cores",
    ),
)
SUITES.add(
    "paper",
    Suite(
        "paper",
        datasets=("fashion-mnist", "cifar10"),
        ipcs=(1, 10, 50),
        methods=_ALL_METHODS,
        preset="paper",
        protocol="idc",
        repeats=5,
        description="the published settings and the idc protocol, 5 repeats: for a GPU "
        "(--device cuda)",
    ),
)


def _ladder_rows() -> dict[str, Row]:
    """IDC, EDD (over IDC), DM and EDD over DM at 1×, 4× and 16× the quick preset's rounds
    beyond digits (IDC: 40 outer iterations of 10 matching steps; DM: 500 image updates)."""
    from exdistill.methods.dm import QUICK as DM_QUICK
    from exdistill.methods.gradient import QUICK_MATCH_STEPS

    idc, dm = QUICK_MATCH_STEPS // 10, DM_QUICK["iterations"]
    rows = {}
    for scale in LADDER_SCALES:
        rows[f"idc-x{scale}"] = Row("idc", {"iterations": idc * scale})
        rows[f"edd-x{scale}"] = Row("edd", {"base_config": {"iterations": idc * scale}})
        rows[f"dm-x{scale}"] = Row("dm", {"iterations": dm * scale})
        rows[f"edd-dm-x{scale}"] = Row(
            "edd", {"base": "dm", "base_config": {"iterations": dm * scale}}
        )
    return rows


LADDER_SCALES = (1, 4, 16)
_LADDER_ROWS = _ladder_rows()
SUITES.add(
    "ladder",
    Suite(
        "ladder",
        datasets=("fashion-mnist", "cifar10-jpeg"),
        ipcs=(10, 50),
        methods=("random", *_LADDER_ROWS),
        # ipc 50 at 16× would take about a day of 2 cores: 1× and 4× only.
        method_ipcs={label: (10,) for label in _LADDER_ROWS if label.endswith("-x16")},
        overrides={"edd": {"segment_evals": False}},
        rows=_LADDER_ROWS,
        full_data=False,
        description="accuracy against budget: random, IDC, EDD, DM and EDD over DM at 1×, 4× "
        "and 16× the quick preset's rounds (ipc 10; 1× and 4× at ipc 50), Fashion-MNIST and "
        "CIFAR-10 (JPEG), protocol idc-quick, 3 repeats",
    ),
)


SUITES.add(
    "tiny",
    Suite(
        "tiny",
        datasets=("tiny-imagenet",),
        ipcs=(1, 10),
        methods=("random", "herding", "dm", "idc", "edd", "edd-dm"),
        method_ipcs={"edd": (10,), "edd-dm": (10,)},  # at ipc 1 EDD is its base
        overrides={"edd": {"segment_evals": False}},
        rows={"edd-dm": Row("edd", {"base": "dm"})},
        # The quick presets as they are: the budget is to be chosen from one measured cell so
        # that the suite fits in about 8 hours of 2 cores with --jobs 2 (not measured yet).
        description="Tiny-ImageNet (200 classes, 64×64, parquet) × ipc 1, 10: random, herding, "
        "DM, IDC, EDD over IDC and over DM, quick presets, idc-quick, 3 repeats, converged "
        "full-data row",
    ),
)


@dataclass(frozen=True)
class Cell:
    dataset: str
    ipc: int  # 0 for the full-data row
    method: str

    @property
    def key(self) -> str:
        return (
            f"{self.dataset}/{FULL}"
            if self.method == FULL
            else (f"{self.dataset}/ipc{self.ipc}/{self.method}")
        )


ONLY_KEYS = ("method", "dataset", "ipc")


def parse_only(text: str | None) -> dict[str, set[str]]:
    """``"method=dc+idc,ipc=10"`` → ``{"method": {"dc", "idc"}, "ipc": {"10"}}``."""
    if not text:
        return {}
    out: dict[str, set[str]] = {}
    for part in text.split(","):
        key, sep, values = part.partition("=")
        key = key.strip()
        if not sep or key not in ONLY_KEYS or not values:
            raise ConfigError(
                f"--only: expected key=value[+value] with key in {', '.join(ONLY_KEYS)}, "
                f"got '{part}'"
            )
        out.setdefault(key, set()).update(v.strip() for v in values.split("+"))
    return out


def plan(suite: Suite, only: dict[str, set[str]] | None = None) -> list[Cell]:
    """The suite's cells, small ipc first (so a partial run covers every dataset), then the
    full-data rows (the most expensive, and cached across suites)."""
    only = only or {}

    def wanted(cell: Cell) -> bool:
        checks = {"method": cell.method, "dataset": cell.dataset, "ipc": str(cell.ipc)}
        return all(checks[k] in v for k, v in only.items() if not (k == "ipc" and cell.ipc == 0))

    cells = [
        Cell(ds, ipc, m)
        for ipc in suite.ipcs
        for ds in suite.datasets
        for m in suite.methods
        if ipc in suite.method_ipcs.get(m, (ipc,))
    ]
    if suite.full_data:
        cells += [Cell(ds, 0, FULL) for ds in suite.datasets]
    return [c for c in cells if wanted(c)]
