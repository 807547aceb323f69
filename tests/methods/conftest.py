"""Fixtures of the method tests: the built-in digits, and experts for MTT's smoke config."""

import pytest

from exdistill.data import load_dataset
from exdistill.experts import resolve_expert_config, train_experts


@pytest.fixture(scope="session")
def smoke_digits():
    return load_dataset("digits")


@pytest.fixture(scope="session")
def smoke_experts(smoke_digits, tmp_path_factory):
    """Two experts of width 8 over 3 epochs: what MTT's ``MethodSpec.smoke`` config expects."""
    out = tmp_path_factory.mktemp("smoke") / "experts"
    recipe = {
        "num_experts": 2,
        "train": {"epochs": 3, "batch_size": 256},
        "model_options": {"width": 8},
    }
    train_experts(smoke_digits, resolve_expert_config("quick", "digits", overrides=recipe), out)
    return out
