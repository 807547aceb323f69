"""The docstring examples of the library run as written (each module's doctests)."""

import doctest
import importlib

import pytest

MODULES = [
    "exdistill.api",
    "exdistill.config",
    "exdistill.data.base",
    "exdistill.distributed",
    "exdistill.evaluation",
    "exdistill.methods.edd",
    "exdistill.methods.filtering",
    "exdistill.methods.herding",
    "exdistill.methods.matching",
    "exdistill.precision",
    "exdistill.seeding",
    "exdistill.synthetic",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
