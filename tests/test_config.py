"""Typed configuration: merging, type coercion, unknown keys, YAML files, ``--set`` overrides."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest

from exdistill.config import (
    apply_overrides,
    config_hash,
    from_dict,
    load_yaml,
    merge,
    parse_overrides,
    require,
    to_dict,
)
from exdistill.errors import ConfigError


@dataclass
class Optim:
    lr: float = 0.1
    steps: int = 10
    nesterov: bool = False
    milestones: tuple[float, ...] = (0.5,)
    kind: Literal["sgd", "adam"] = "sgd"


@dataclass
class Model:
    name: str = "convnet"
    width: int | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Job:
    seed: int = 0
    tags: list[str] = field(default_factory=list)
    optim: Optim = field(default_factory=Optim)
    model: Model = field(default_factory=Model)


# ----------------------------------------------------------------------------- merge / from_dict
def test_from_dict_nested_and_defaults_kept() -> None:
    job = from_dict(Job, {"seed": 3, "optim": {"lr": 0.5}, "model": {"width": 64}})
    assert job.seed == 3
    assert job.optim == Optim(lr=0.5)  # other optim fields keep their defaults
    assert job.model == Model(width=64)


def test_merge_returns_a_copy() -> None:
    job = Job()
    merged = merge(job, {"optim": {"steps": 5}})
    assert merged.optim.steps == 5
    assert job.optim.steps == 10  # the original is untouched
    assert merge(merged, {}) == merged


def test_merge_layers_defaults_yaml_then_overrides() -> None:
    job = merge(Job(), {"optim": {"lr": 0.2, "steps": 7}})
    job = apply_overrides(job, ["optim.lr=0.3"])
    assert (job.optim.lr, job.optim.steps) == (0.3, 7)


def test_dashes_in_keys_mean_underscores() -> None:
    @dataclass
    class C:
        max_steps: int = 0

    assert merge(C(), {"max-steps": 4}).max_steps == 4


def test_dict_field_overrides_merge_into_existing_mapping() -> None:
    # A preset fills a mapping field; overriding one key must keep the others (EDD's base_config).
    job = merge(Job(), {"model": {"options": {"width": 64, "depth": 3}}})
    job = apply_overrides(job, ["model.options.depth=2"])
    assert job.model.options == {"width": 64, "depth": 2}


# ----------------------------------------------------------------------------- coercion
@pytest.mark.parametrize(
    ("data", "attr", "expected"),
    [
        ({"steps": "12"}, "steps", 12),
        ({"steps": 12}, "steps", 12),
        ({"lr": 1}, "lr", 1.0),
        ({"lr": "1e-3"}, "lr", 1e-3),
        ({"nesterov": True}, "nesterov", True),
        ({"nesterov": "yes"}, "nesterov", True),
        ({"nesterov": "False"}, "nesterov", False),
        ({"nesterov": "0"}, "nesterov", False),
        ({"milestones": [0.25, "0.75"]}, "milestones", (0.25, 0.75)),
        ({"milestones": "0.25,0.75"}, "milestones", (0.25, 0.75)),
        ({"milestones": []}, "milestones", ()),
        ({"kind": "adam"}, "kind", "adam"),
    ],
)
def test_values_coerced_to_field_types(data: dict, attr: str, expected: Any) -> None:
    value = getattr(merge(Optim(), data), attr)
    assert value == expected
    assert type(value) is type(expected)


def test_optional_and_list_fields() -> None:
    assert merge(Model(), {"width": "32"}).width == 32
    assert merge(Model(width=32), {"width": None}).width is None
    assert merge(Job(), {"tags": "a,b"}).tags == ["a", "b"]
    assert merge(Job(), {"tags": ["a", 1]}).tags == ["a", "1"]


@pytest.mark.parametrize(
    ("data", "dotted"),
    [
        ({"optim": {"steps": 1.5}}, "optim.steps"),
        ({"optim": {"steps": "ten"}}, "optim.steps"),
        ({"optim": {"steps": True}}, "optim.steps"),  # a bool is not an integer here
        ({"optim": {"lr": "fast"}}, "optim.lr"),
        ({"optim": {"lr": False}}, "optim.lr"),
        ({"optim": {"nesterov": "maybe"}}, "optim.nesterov"),
        ({"optim": {"nesterov": 2}}, "optim.nesterov"),
        ({"optim": {"kind": "rmsprop"}}, "optim.kind"),
        ({"optim": {"milestones": 0.5}}, "optim.milestones"),
        ({"optim": {"milestones": ["x"]}}, "optim.milestones[0]"),
        ({"model": {"width": "wide"}}, "model.width"),
        ({"model": {"name": {"a": 1}}}, "model.name"),
        ({"model": {"options": [1, 2]}}, "model.options"),
        ({"optim": 3}, "optim"),
    ],
)
def test_bad_types_rejected_with_dotted_name(data: dict, dotted: str) -> None:
    with pytest.raises(ConfigError, match="^" + re.escape(dotted) + ":"):
        merge(Job(), data)


def test_unknown_keys_rejected_with_dotted_name_and_choices() -> None:
    with pytest.raises(ConfigError, match=r"unknown config key 'optim\.momentum'") as err:
        merge(Job(), {"optim": {"momentum": 0.9}})
    assert "lr" in str(err.value) and "steps" in str(err.value)  # the known keys are listed
    with pytest.raises(ConfigError, match=r"unknown config key 'bogus'"):
        from_dict(Job, {"bogus": 1})
    with pytest.raises(ConfigError, match=r"unknown config key 'run\.optim\.x'"):
        merge(Job(), {"optim": {"x": 1}}, prefix="run.")


def test_non_mapping_data_rejected() -> None:
    with pytest.raises(ConfigError, match="expected a mapping"):
        merge(Job(), [1, 2])  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- overrides
def test_parse_overrides_builds_a_tree_with_yaml_values() -> None:
    tree = parse_overrides(["a.b=1", "a.c=x,y", "d=true", "e=", "f.g.h=0.5", "s= hi=there"])
    assert tree == {
        "a": {"b": 1, "c": "x,y"},
        "d": True,
        "e": "",
        "f": {"g": {"h": 0.5}},
        "s": "hi=there",  # only the first '=' splits
    }
    assert parse_overrides([]) == {}


def test_parse_overrides_errors() -> None:
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["optim.lr"])
    with pytest.raises(ConfigError, match="'a' is not a section"):
        parse_overrides(["a=1", "a.b=2"])


def test_apply_overrides_nested_and_unknown() -> None:
    job = apply_overrides(Job(), ["optim.milestones=0.3,0.6", "model.width=16", "seed=4"])
    assert job.optim.milestones == (0.3, 0.6)
    assert (job.model.width, job.seed) == (16, 4)
    with pytest.raises(ConfigError, match=r"'optim\.bogus'"):
        apply_overrides(Job(), ["optim.bogus=1"])
    with pytest.raises(ConfigError, match=r"^optim\.steps:"):
        apply_overrides(Job(), ["optim.steps=abc"])


# ----------------------------------------------------------------------------- YAML files
def test_load_yaml_ok_and_empty(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: 0.05\nseed: 2\n")
    assert from_dict(Job, load_yaml(path)) == Job(seed=2, optim=Optim(lr=0.05))
    (tmp_path / "empty.yaml").write_text("")
    assert load_yaml(tmp_path / "empty.yaml") == {}


def test_load_yaml_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_yaml(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="config file not found"):
        load_yaml(tmp_path)  # a directory is not a config file
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: [1, 2\nseed: :\n")
    with pytest.raises(ConfigError, match="not valid YAML") as err:
        load_yaml(bad)
    assert "\n" not in str(err.value)  # one line
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping at the top level"):
        load_yaml(listing)


# ----------------------------------------------------------------------------- helpers
def test_to_dict_and_hash_are_stable() -> None:
    d = to_dict(Job())
    assert d["optim"]["milestones"] == [0.5]  # JSON-friendly
    assert from_dict(Job, d) == Job()  # and round-trips
    assert config_hash(Job()) == config_hash(Job())
    assert config_hash(Job()) != config_hash(Job(seed=1))
    assert len(config_hash({"a": 1})) == 12


def test_require() -> None:
    require(True, "never")
    with pytest.raises(ConfigError, match="^ipc: must be"):
        require(False, "ipc: must be ≥ 1")
