"""Multi-process distillation (DESIGN.md §5): two gloo processes on CPU give one process's set.

The real tests launch ``python -m torch.distributed.run --standalone --nproc-per-node 2`` on a
small helper that runs the unchanged CLI (``exdistill distill ...``) after installing an audit
hook on every rank but 0: the hook records any write, rename, mkdir or delete under the run
directory, so "only rank 0 writes files" is checked on the real file system calls. Budgets are
tiny (digits, ipc 2, width 16, 3 × 3 matching steps, dc-quick evaluation, 2 repeats, no
baselines, no t-SNE); one thread per process.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from exdistill.cli import main
from exdistill.distributed import Dist
from exdistill.io import read_jsonl

HELPER = r"""
import json, os, sys

run_dir, report, argv = os.path.abspath(sys.argv[1]), sys.argv[2], sys.argv[3:]
rank = int(os.environ["RANK"])
writes = []

def under_run(path):
    try:
        return os.path.abspath(os.fsdecode(path)).startswith(run_dir)
    except TypeError:  # a file descriptor
        return False

def hook(event, args):
    if event == "open":
        path, mode, flags = args
        writing = any(c in (mode or "") for c in "wax+") or flags & (
            os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC
        )
        if writing and under_run(path):
            writes.append([event, os.fsdecode(path)])
    elif event in ("os.rename", "os.mkdir", "os.remove", "os.rmdir", "shutil.rmtree"):
        if under_run(args[0]):
            writes.append([event, os.fsdecode(args[0])])

if rank != 0:
    sys.addaudithook(hook)
from exdistill.cli import main
code = main([*argv, "--out", run_dir])
with open(f"{report}.{rank}.json", "w") as f:
    json.dump({"code": code, "writes": writes}, f)
sys.exit(code)
"""

TINY = [
    "--ipc", "2", "--repeats", "2", "--no-baselines", "--no-tsne",
    "--set", "run.protocol=dc-quick",
]  # fmt: skip
GRAD = ["model_options.width=16", "iterations=3", "match_steps=3", "checkpoint_every=1"]
EDD = ["distill", "--method", "edd", "--segments", "1,1", *TINY]
EDD += [a for kv in GRAD for a in ("--set", f"method.base_config.{kv}")]
EDD += ["--set", "method.filter.max_steps=20", "--set", "method.filter_model_options.width=16"]


def base_method(name: str) -> list[str]:
    return [
        "distill",
        "--method",
        name,
        *TINY,
        *(a for kv in GRAD for a in ("--set", f"method.{kv}")),
    ]


def one_process(argv: list[str], out: Path) -> None:
    """The same command in this process (one thread, conftest.py)."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main([*argv, "--out", str(out)]) == 0


def two_processes(argv: list[str], out: Path, tmp: Path) -> list[dict]:
    helper = tmp / "helper.py"
    helper.write_text(HELPER)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "EXDISTILL_CACHE": str(tmp / "cache"),
    }
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        str(helper), str(out), str(tmp / "report"), *argv,
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads((tmp / f"report.{r}.json").read_text()) for r in range(2)]


def synthetic(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "synthetic" / "synthetic.safetensors"))


def check_same_run(one: Path, two: Path, reports: list[dict]) -> dict:
    assert [r["code"] for r in reports] == [0, 0]
    assert reports[1]["writes"] == [], "a rank other than 0 wrote into the run directory"
    a, b = synthetic(one), synthetic(two)
    assert a.keys() == b.keys()
    for key in a:  # float tolerance is allowed; on CPU the sum over ranks is in fact exact
        torch.testing.assert_close(b[key], a[key], rtol=1e-6, atol=1e-6)
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())
    m1, m2 = (json.loads((r / "metrics.json").read_text()) for r in (one, two))
    # Evaluation repeats were split over the ranks and gathered back in repeat order.
    assert m2["models"]["convnet"]["seeds"] == m1["models"]["convnet"]["seeds"]
    assert m2["test_accs"] == pytest.approx(m1["test_accs"], abs=1e-6)
    l1, l2 = read_jsonl(one / "log.jsonl"), read_jsonl(two / "log.jsonl")
    assert len(l2) == len(l1)  # written once, by rank 0
    for r1, r2 in zip(l1, l2, strict=True):
        if "match_loss" in r1:  # summed over ranks: equal up to rounding
            assert r2["match_loss"] == pytest.approx(r1["match_loss"], rel=1e-5)
    return m2


def test_two_gloo_processes_give_the_one_process_edd_set(tmp_path: Path) -> None:
    """EDD over IDC: matching shards, θ broadcasts, the filter's verdict broadcast, the
    segment evaluation and the final one gathered (24 s on a loaded 2-core machine)."""
    one_process(EDD, tmp_path / "one")
    reports = two_processes(EDD, tmp_path / "two", tmp_path)
    m2 = check_same_run(tmp_path / "one", tmp_path / "two", reports)
    m1 = json.loads((tmp_path / "one" / "metrics.json").read_text())
    for s1, s2 in zip(m1["segments"], m2["segments"], strict=True):
        assert s2["real_per_class"] == s1["real_per_class"]  # same filtered pools
        assert s2["filter_val_acc"] == s1["filter_val_acc"]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["dc", "dsa", "idc"])
def test_two_gloo_processes_give_the_one_process_base_set(name: str, tmp_path: Path) -> None:
    one_process(base_method(name), tmp_path / "one")
    reports = two_processes(base_method(name), tmp_path / "two", tmp_path)
    check_same_run(tmp_path / "one", tmp_path / "two", reports)


# ----------------------------------------------------------------------------- one process
def test_one_process_is_the_default_and_does_nothing() -> None:
    dist = Dist.from_env(env={})
    assert dist == Dist() and dist.is_main and not dist.enabled
    x = torch.arange(3.0)
    assert dist.all_reduce_(x) is x and torch.equal(x, torch.arange(3.0))
    assert dist.broadcast_object({"a": 1}) == {"a": 1}
    assert dist.gather_strided([1, 2]) == [1, 2]
    dist.barrier()
    assert Dist.from_env(env={"WORLD_SIZE": "1", "RANK": "0"}) == Dist()


@pytest.mark.parametrize("n", [0, 1, 3, 10, 200])
@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_shards_are_contiguous_balanced_and_cover_every_class(n: int, world: int) -> None:
    items = list(range(n))
    shards = [Dist(rank=r, world=world).shard(items) for r in range(world)]
    assert [c for s in shards for c in s] == items
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_methods_that_do_not_shard_are_refused_under_torchrun(tmp_path):
    """dm, mtt, herding and random would repeat all work on every rank: refused up front."""
    from exdistill.errors import ConfigError
    from exdistill.pipeline import RunConfig, distill

    two_ranks = Dist(rank=0, world=2)
    for method in ("dm", "herding", "random"):
        run = RunConfig(method=method, ipc=1, baselines=False)
        with pytest.raises(ConfigError, match="one process only"):
            distill(run, {}, tmp_path / method, dist=two_ranks)
        assert not (tmp_path / method).exists()
    with pytest.raises(ConfigError, match="one process only"):
        distill(RunConfig(method="edd", ipc=2), {"base": "dm"}, tmp_path / "edd", dist=two_ranks)


def test_ranks_on_one_machine_share_its_cores():
    from exdistill.distributed import Dist

    two = Dist(0, 2, 0, 2)
    assert two.cpu_threads(requested=2, cpus=2) == 1  # 2 × 2 threads on 2 cores: 28× slower
    assert two.cpu_threads(requested=1, cpus=2) == 1
    assert two.cpu_threads(requested=8, cpus=16) == 8  # the user's choice where it fits
    assert Dist(0, 4, 0, 4).cpu_threads(requested=2, cpus=2) == 1  # never below one
    assert Dist().cpu_threads(requested=2, cpus=1) == 2  # one process: left alone
