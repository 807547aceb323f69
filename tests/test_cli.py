"""The command line, in process: every command once on tiny budgets, and its error paths.

One real ``distill`` run (idc, ipc 1, one outer iteration of two matching steps, dc-quick
evaluation, one repeat; ≈ 7 s on one core) is shared by the evaluate/show/overwrite tests.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors import safe_open

from exdistill.cli import main
from exdistill.methods import METHODS
from exdistill.models import kernels
from exdistill.synthetic import SIDECAR_FILE, TENSORS_FILE, SyntheticSet

DISTILL = [
    "distill",
    "--method",
    "idc",
    "--ipc",
    "1",
    "--repeats",
    "1",
    "--no-baselines",
    "--set",
    "method.iterations=1",
    "--set",
    "method.match_steps=2",
    "--set",
    "run.protocol=dc-quick",
    "--set",
    "method.factor=2",
]


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def distilled(tmp_path_factory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("distilled")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("EXDISTILL_CACHE", str(root / "cache"))
            code, out, err = run_cli([*DISTILL, "--out", root / "run"])
    finally:
        torch.set_num_threads(before)
    assert code == 0, err
    return root / "run", out


# ----------------------------------------------------------------------------- listings
def test_datasets_lists_digits_as_found(capsys) -> None:
    assert main(["datasets"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [c.strip() for c in lines[0].split("|")][:3] == ["dataset", "looks in", "found"]
    row = next(line for line in lines if line.startswith("digits"))
    cells = [c.strip() for c in row.split("|")]
    assert cells[:3] == ["digits", "built in", "yes"]


def test_methods_lists_every_registered_method(capsys) -> None:
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    names = [line.split("|")[0].strip() for line in out.splitlines()[2:]]
    assert names == METHODS.names()
    assert "Exclusive Dataset Distillation" in out


def test_version_and_argparse_errors(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and "exdistill 0." in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        main(["baseline", "best"])  # not a choice
    assert exit_.value.code == 2


# ----------------------------------------------------------------------------- baseline
def test_baseline_random_writes_metrics_and_uses_the_cache(tmp_path: Path, monkeypatch) -> None:
    argv = ["baseline", "random", "--dataset", "digits", "--ipc", "2", "--repeats", "1"]
    argv += ["--protocol", "dc-quick"]
    code, out, err = run_cli([*argv, "--out", tmp_path / "b1"])
    assert code == 0, err
    metrics = json.loads((tmp_path / "b1" / "metrics.json").read_text())
    assert metrics["protocol"] == "dc-quick" and metrics["dataset"] == "digits"
    assert metrics["ipc"] == 2 and metrics["method"] == "random" and metrics["split"] == "test"
    assert len(metrics["test_accs"]) == 1 and len(metrics["seeds"]) == 1
    assert metrics["test_acc_mean"] == metrics["test_accs"][0] and metrics["test_acc_std"] == 0
    assert 0.3 < metrics["test_acc_mean"] <= 1.0  # 20 real digits train far above chance
    assert metrics["train_images"] == 20
    assert json.loads((tmp_path / "b1" / "run.json").read_text()) == {"status": "done"}
    assert yaml.safe_load((tmp_path / "b1" / "config.yaml").read_text())["ipc"] == 2
    assert "random" in out and f"{100 * metrics['test_acc_mean']:.2f}" in out
    assert list((tmp_path / "cache" / "baselines").iterdir())

    def fail(*args, **kwargs):
        raise AssertionError("the second run must read the cache")

    monkeypatch.setattr("exdistill.baselines.evaluate_images", fail)
    code, _, err = run_cli([*argv, "--out", tmp_path / "b2"])
    assert code == 0, err
    again = json.loads((tmp_path / "b2" / "metrics.json").read_text())
    assert again["test_accs"] == metrics["test_accs"]
    with pytest.raises(AssertionError, match="cache"):  # --no-cache recomputes
        run_cli([*argv, "--no-cache", "--out", tmp_path / "b3"])


# ----------------------------------------------------------------------------- distill & co
def test_distill_writes_the_run_directory(distilled) -> None:
    run, out = distilled
    names = {p.name for p in run.iterdir()}
    expected = {"synthetic", "grid.png", "metrics.json", "report.md", "config.yaml", "run.json"}
    assert expected | {"log.jsonl", "initial.safetensors"} <= names
    with safe_open(str(run / "initial.safetensors"), "pt") as f:  # paired with the set's order
        assert f.metadata() == {"order": "final"}
    assert {p.name for p in (run / "synthetic").iterdir()} == {TENSORS_FILE, SIDECAR_FILE}
    metrics = json.loads((run / "metrics.json").read_text())
    assert (metrics["method"], metrics["dataset"], metrics["ipc"]) == ("idc", "digits", 1)
    assert metrics["protocol"] == "dc-quick" and metrics["split"] == "test"
    assert len(metrics["test_accs"]) == 1 and "baselines" not in metrics
    assert not {"ior", "hlr", "lrs"} & set(metrics)  # no baselines: no scores, not made-up ones
    sim = metrics["update_similarity"]  # ipc 1: one stored image per class, nothing to compare
    assert sim["mean"] is None and sim["per_class"] == [None] * 10
    # digits maps are far below the fused kernels' threshold: no compiled call (0; -1 if an
    # earlier test in this process found no compiler)
    calls = metrics["fused_kernel_calls"]
    assert set(calls) == set(kernels.KERNELS) and max(calls.values()) <= 0
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["method"]["iterations"] == 1 and config["method"]["match_steps"] == 2
    assert config["method"]["net_steps"] == 1  # the quick preset survives the overrides
    assert config["run"]["protocol"] == "dc-quick" and config["run"]["baselines"] is False
    assert json.loads((run / "run.json").read_text()) == {"status": "done"}
    report = (run / "report.md").read_text()
    assert report.startswith("# idc on digits, ipc 1") and "![synthetic images](grid.png)" in report
    assert "## t-SNE" in report and (run / "tsne.png").is_file()
    syn = SyntheticSet.load(run / "synthetic")
    assert (syn.ipc, syn.factor, syn.info["method"], syn.info["seed"]) == (1, 2, "idc", 0)
    assert "idc" in out and f"wrote {run}/" in out


def test_distill_with_baselines_scores_the_set_against_them(tmp_path: Path) -> None:
    """DD-Ranking's IOR, HLR and LRS in metrics.json, from the accuracies beside them."""
    from exdistill.scores import normalise

    argv = ["distill", "--method", "dm", "--dataset", "digits", "--ipc", "10", "--repeats", "1"]
    argv += ["--no-tsne", "--set", "run.protocol=idc-smoke", "--set", "method.iterations=2"]
    argv += ["--set", "method.model_options.width=8", "--out", tmp_path / "run"]
    code, _, err = run_cli(argv)
    assert code == 0, err
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    syn = metrics["test_acc_mean"]
    random = metrics["baselines"]["random"]["test_acc_mean"]
    full = metrics["baselines"]["full"]["test_acc_mean"]
    assert metrics["ior"] == pytest.approx(syn - random, abs=1e-12)
    assert metrics["hlr"] == pytest.approx(full - syn, abs=1e-12)
    alpha = 0.5 * metrics["ior"] - 0.5 * metrics["hlr"]
    assert metrics["lrs"] == pytest.approx(normalise(alpha), abs=1e-12)
    assert alpha == pytest.approx(syn - (random + full) / 2, abs=1e-12)  # w = 0.5
    assert 0 <= metrics["lrs"] <= 1
    report = (tmp_path / "run" / "report.md").read_text()
    assert "| IOR (points) | HLR (points) | LRS |" in report
    assert f"| {100 * metrics['ior']:+.2f} | {100 * metrics['hlr']:.2f} |" in report


def test_ars_compares_the_lead_over_random_with_and_without_augmentation(tmp_path: Path) -> None:
    from exdistill.scores import normalise

    argv = ["distill", "--method", "dm", "--dataset", "digits", "--ipc", "2", "--repeats", "1"]
    argv += ["--no-tsne", "--ars", "--set", "run.protocol=idc-smoke", "--set"]
    argv += ["method.iterations=2", "--set", "method.model_options.width=8"]
    code, _, err = run_cli([*argv, "--out", tmp_path / "run"])
    assert code == 0, err
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    noaug = m["no_augmentation"]
    assert noaug["protocol"] == "idc-smoke-noaug"
    beta = 0.5 * (m["test_acc_mean"] - m["baselines"]["random"]["test_acc_mean"]) + 0.5 * (
        noaug["synthetic"]["test_acc_mean"] - noaug["random"]["test_acc_mean"]
    )
    assert m["ars"] == pytest.approx(normalise(beta), abs=1e-12)
    code, _, err = run_cli([*argv, "--no-baselines", "--out", tmp_path / "bad"])
    assert code == 2 and "ars: needs the baselines" in err


def test_evaluate_a_saved_set_reproduces_the_distill_accuracy(distilled, tmp_path: Path) -> None:
    run, _ = distilled
    code, out, err = run_cli(
        ["evaluate", run / "synthetic", "--protocol", "dc-quick", "--repeats", "1"]
        + ["--out", tmp_path / "ev"]
    )
    assert code == 0, err
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert (metrics["method"], metrics["dataset"], metrics["ipc"]) == ("idc", "digits", 1)
    assert metrics["synset"] == str(run / "synthetic") and metrics["protocol"] == "dc-quick"
    assert list(metrics["models"]) == ["convnet"]
    assert metrics["eval_seconds"] > 0  # the bench's cost tables read it
    # same set, protocol, network and seed: the same accuracy, bit for bit
    original = json.loads((run / "metrics.json").read_text())
    assert metrics["test_accs"] == original["test_accs"]
    assert "convnet" in out


def test_show_writes_grid_and_exports(distilled, tmp_path: Path) -> None:
    synset = tmp_path / "synset"
    shutil.copytree(distilled[0] / "synthetic", synset)
    code, out, err = run_cli(["show", synset, "--export", tmp_path / "export"])
    assert code == 0, err
    assert (synset / "grid.png").is_file()  # default place
    classes = sorted((tmp_path / "export" / "train").iterdir())
    assert [c.name for c in classes] == [str(k) for k in range(10)]
    assert all(len(list(c.glob("*.png"))) == 4 for c in classes)  # ipc 1 · factor 2²
    code, _, _ = run_cli(["show", synset, "--out", tmp_path / "g.png"])
    assert code == 0 and (tmp_path / "g.png").is_file()


def test_report_command_rewrites_the_report(distilled, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(distilled[0], run, ignore=shutil.ignore_patterns("synthetic"))
    (run / "report.md").unlink()
    code, out, _ = run_cli(["report", run])
    assert code == 0 and (run / "report.md").is_file() and "report.md" in out
    code, _, _ = run_cli(["report", run, "--compare", distilled[0]])
    assert code == 0 and "## Forgetting beside other runs" in (run / "report.md").read_text()


def test_existing_run_is_not_clobbered(distilled) -> None:
    run, _ = distilled
    before = {p.name: p.stat().st_mtime_ns for p in run.iterdir()}
    code, out, err = run_cli([*DISTILL, "--out", run])
    assert code == 2 and "already holds files" in err and "--overwrite" in err
    assert err.count("\n") == 1 and out == ""
    assert {p.name: p.stat().st_mtime_ns for p in run.iterdir()} == before


# ----------------------------------------------------------------------------- errors
def yaml_file(path: Path, data: object) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


BAD = {
    "unknown-dataset": (["distill", "--dataset", "nope"], "unknown dataset 'nope'"),
    "ipc-0": (["distill", "--ipc", "0"], "ipc: must be ≥ 1"),
    "unknown-method-key": (
        ["distill", "--method", "idc", "--set", "method.bogus=1"],
        "unknown config key 'bogus'",
    ),
    "unknown-run-key": (["distill", "--set", "run.bogus=1"], "unknown config key 'run.bogus'"),
    "unknown-section": (["distill", "--set", "bogus.x=1"], "--set keys start with"),
    "bad-type": (["distill", "--set", "run.repeats=many"], "run.repeats: expected an integer"),
    "unknown-method": (["distill", "--method", "nope"], "unknown method 'nope'"),
    "unknown-protocol": (["distill", "--protocol", "nope"], "unknown protocol 'nope'"),
    "unknown-model": (["distill", "--models", "nope"], "unknown model 'nope'"),
    "segments-sum": (
        ["distill", "--method", "edd", "--ipc", "4", "--segments", "1,1"],
        "segments: 1,1 sum to 2, not ipc 4",
    ),
    "segments-not-edd": (
        ["distill", "--method", "idc", "--segments", "1"],
        "--segments applies to --method edd, pdd only",
    ),
    "factor": (
        ["distill", "--method", "idc", "--set", "method.factor=3"],
        "factor: 3 does not divide the image size 8×8",
    ),
    "edd-factor": (
        ["distill", "--method", "edd", "--ipc", "2", "--set", "method.base_config.factor=3"],
        "factor: 3 does not divide",
    ),
    "too-few-images": (["distill", "--method", "idc", "--ipc", "200"], "exceeds the"),
    "edd-budget": (
        ["distill", "--method", "edd", "--ipc", "4", "--set", "method.base_config.iterations=1"],
        "cannot give each of the 2 segments",
    ),
    "bench-eval-repeats": (
        ["bench", "--suite", "smoke", "--eval-repeats", "2"],
        "--eval-repeats applies to --eval-protocol only",
    ),
    "missing-config": (["distill", "--config", "{tmp}/missing.yaml"], "config file not found"),
    "config-section": (["distill", "--config", "{tmp}/section.yaml"], "unknown config section"),
    "config-key": (["distill", "--config", "{tmp}/key.yaml"], "unknown config key 'run.ipcs'"),
    "run-ipc-0": (["run", "--set", "run.ipc=0"], "ipc: must be ≥ 1"),
    "baseline-ipc-0": (["baseline", "random", "--ipc", "0"], "ipc: must be ≥ 1"),
    "baseline-dataset": (["baseline", "full", "--dataset", "nope"], "unknown dataset"),
    "baseline-protocol": (["baseline", "random", "--protocol", "nope"], "unknown protocol"),
    "evaluate-missing": (["evaluate", "{tmp}/nowhere"], "not found"),
    "evaluate-protocol": (
        ["evaluate", "{synset}", "--protocol", "nope"],
        "unknown protocol 'nope'",
    ),
    "evaluate-model": (["evaluate", "{synset}", "--models", "nope"], "unknown model 'nope'"),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_input_exits_2_with_one_line_and_writes_nothing(case: str, tmp_path: Path) -> None:
    argv, message = BAD[case]
    yaml_file(tmp_path / "section.yaml", {"run": {"ipc": 1}, "train": {}})
    yaml_file(tmp_path / "key.yaml", {"run": {"ipcs": 1}})
    synset = tmp_path / "synset"
    if "{synset}" in argv:  # a small valid set to point at
        from exdistill.data import load_dataset

        SyntheticSet.from_noise(load_dataset("digits"), 1, torch.Generator()).save(synset)
    out = tmp_path / "out"
    argv = [a.format(tmp=tmp_path, synset=synset) for a in argv]
    code, stdout, err = run_cli([*argv, "--out", out])
    assert code == 2
    assert err.startswith("exdistill: error: ") and err.count("\n") == 1, err
    assert message in err
    assert stdout == ""
    assert not out.exists()
    assert not (tmp_path / "cache" / "baselines").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["show", "{tmp}/nowhere"], "not found"),
        (["report", "{tmp}"], "metrics.json: not found"),
    ],
)
def test_bad_paths_for_show_and_report(argv: list[str], message: str, tmp_path: Path) -> None:
    code, stdout, err = run_cli([a.format(tmp=tmp_path) for a in argv])
    assert code == 2 and message in err and err.count("\n") == 1
    assert stdout == "" and not (tmp_path / "nowhere").exists()
    assert not (tmp_path / "report.md").exists()


def test_model_that_cannot_take_the_image_size_is_refused(tmp_path, monkeypatch, capsys) -> None:
    from torch import nn

    from exdistill.models import MODELS

    def needs_32px(channels, num_classes, image_size):
        # A fixed-size linear head: only 32×32 inputs fit.
        return nn.Sequential(nn.Flatten(), nn.Linear(channels * 32 * 32, num_classes))

    monkeypatch.setitem(MODELS._items, "needs32", needs_32px)
    out = tmp_path / "run"
    code = main(["distill", "--method", "idc", "--models", "needs32", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "models: 'needs32' cannot take 1×8×8 images" in err[0]
    assert not out.exists()


def test_the_config_files_run_section_wins_over_flags_left_unset(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "run": {
                    "method": "idc",
                    "ipc": 2,
                    "repeats": 1,
                    "protocol": "idc-smoke",
                    "seed": 3,
                },
                "method": {"iterations": 1, "match_steps": 1, "model_options": {"width": 8}},
            }
        )
    )
    code, _, err = run_cli(["distill", "--config", str(config), "--no-baselines", "--no-tsne",
                            "--out", str(tmp_path / "run")])  # fmt: skip
    assert code == 0, err
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert (metrics["method"], metrics["ipc"], len(metrics["test_accs"])) == ("idc", 2, 1)
    assert metrics["seed"] == 3  # --seed left unset: the file's value, not the flag's default
    code, _, err = run_cli(["distill", "--config", str(config), "--ipc", "1", "--no-baselines",
                            "--no-tsne", "--out", str(tmp_path / "flag")])  # fmt: skip
    assert code == 0, err
    assert json.loads((tmp_path / "flag" / "metrics.json").read_text())["ipc"] == 1
