"""The Python API: the README's example runs, and the API gives the pipeline's sets."""

import re
from pathlib import Path

import pytest
import torch

import exdistill as xd
from exdistill.errors import ConfigError
from exdistill.pipeline import RunConfig, distill

README = Path(__file__).resolve().parents[1] / "README.md"
TINY = {"iterations": 2, "match_steps": 2, "model_options": {"width": 8}}


@pytest.fixture(scope="module")
def digits():
    return xd.load_dataset("digits")


def readme_example() -> str:
    section = README.read_text().split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
def test_the_readme_example_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    exec(compile(readme_example(), "README.md", "exec"), {})
    mean = float(capsys.readouterr().out.split()[0])
    assert 80 < mean <= 100  # EDD at ipc 10 on digits (random subset: about 92 %)
    assert (tmp_path / "out" / "set" / "synthetic.safetensors").is_file()


def test_the_api_gives_the_set_the_pipeline_gives(digits, tmp_path):
    syn = xd.distill(digits, method="idc", ipc=2, seed=1, config=TINY)
    run = RunConfig(method="idc", ipc=2, seed=1, repeats=1, baselines=False)
    outcome = distill(run, TINY, tmp_path / "run")
    assert torch.equal(syn.images, outcome.synthetic.images)
    assert syn.info["method"] == "idc" and syn.info["seed"] == 1


def test_a_saved_set_loads_back_and_decodes(digits, tmp_path):
    syn = xd.distill(digits, method="idc", ipc=1, seed=0, config={**TINY, "factor": 2})
    syn.save(tmp_path / "set")
    back = xd.SyntheticSet.load(tmp_path / "set")
    assert torch.equal(back.images, syn.images) and torch.equal(back.labels, syn.labels)
    images, labels = back.decoded()
    assert images.shape == (40, 1, 8, 8) and labels.shape == (40,)


def test_evaluate_keeps_every_accuracy(digits):
    syn = xd.distill(digits, method="random", ipc=2, seed=0)
    res = xd.evaluate(syn, digits, protocol="idc-quick", repeats=2, seed=0, epochs=3)
    assert len(res.test_accs) == 2 and len(res.val_accs) == 2
    assert res.test_acc_mean == pytest.approx(sum(res.test_accs) / 2)
    assert 0.0 <= res.test_acc_mean <= 1.0


def test_bad_arguments_fail_before_any_work(digits):
    with pytest.raises(ConfigError, match="method"):
        xd.distill(digits, method="nope")
    with pytest.raises(ConfigError, match="bogus"):
        xd.distill(digits, method="idc", config={"bogus": 1})
