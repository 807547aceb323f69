"""Fixtures every test gets: a private dataset/baseline cache and one intra-op thread."""

import pytest
import torch


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Baseline and ImageFolder caches go to the test's own temporary directory."""
    monkeypatch.setenv("EXDISTILL_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """One intra-op thread for the whole session, module fixtures included.

    Two shared cores: more threads only add contention for these tiny networks (training 50
    steps on digits: 0.26 s with 1 thread, 1.35 s with 2 on a loaded machine). And bit-identity
    tests compare results computed in fixtures with results computed in tests: float
    reductions differ between thread counts, so both must run with the same one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
