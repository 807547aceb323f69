"""The one registry behind datasets, models, methods and protocols."""

from __future__ import annotations

import pytest

from exdistill.errors import ConfigError
from exdistill.registry import Registry


def test_register_decorator_returns_the_object_and_get_finds_it() -> None:
    reg: Registry = Registry("widget")

    @reg.register("b")
    def build_b() -> str:
        return "b"

    reg.add("a", 1)
    assert build_b() == "b"  # the decorator leaves the function usable
    assert reg.get("b") is build_b
    assert reg.get("a") == 1
    assert reg.names() == ["a", "b"]  # sorted
    assert list(reg) == ["a", "b"]
    assert "a" in reg and "c" not in reg


def test_duplicates_refused_and_first_kept() -> None:
    reg: Registry = Registry("widget")
    reg.add("a", 1)
    with pytest.raises(ValueError, match="widget 'a' is already registered"):
        reg.add("a", 2)
    with pytest.raises(ValueError, match="already registered"):
        reg.register("a")(lambda: None)
    assert reg.get("a") == 1


def test_unknown_name_lists_the_choices() -> None:
    reg: Registry = Registry("method")
    for name in ("idc", "dc", "edd"):
        reg.add(name, name)
    with pytest.raises(ConfigError) as err:
        reg.get("idd")
    assert str(err.value) == "unknown method 'idd'; choose from: dc, edd, idc"
    assert err.value.__cause__ is None and err.value.__suppress_context__  # no KeyError noise


def test_empty_registry() -> None:
    reg: Registry = Registry("thing")
    assert reg.names() == [] and list(reg) == []
    with pytest.raises(ConfigError, match="unknown thing 'x'"):
        reg.get("x")


def test_library_registries_are_populated() -> None:
    from exdistill.data import DATASETS
    from exdistill.evaluation import PROTOCOLS
    from exdistill.methods import METHODS
    from exdistill.models import MODELS

    assert "digits" in DATASETS
    assert {"convnet", "mlp"} <= set(MODELS.names())
    assert {"random", "dc", "dsa", "idc", "edd"} <= set(METHODS.names())
    assert {"idc", "dc", "dsa", "idc-quick", "dc-quick", "dsa-quick"} <= set(PROTOCOLS.names())
    with pytest.raises(ConfigError, match="unknown dataset 'nope'; choose from: .*digits"):
        DATASETS.get("nope")
