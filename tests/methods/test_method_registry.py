"""Every registered method, through the registry: killed and resumed it ends bitwise where an
uninterrupted run ends, a NaN stops it naming the iteration, and EDD with one segment over any
base it can wrap is that base. (The same seed giving the same set: test_method_identity.py.)"""

import copy

import pytest
import torch
from test_method_identity import TINY, set_hash

from exdistill.checkpoint import Checkpointer
from exdistill.errors import NumericalError
from exdistill.methods import METHODS, DistillContext, resolve_config

# Methods that optimise (random and herding select real images: nothing to resume or blow up).
OPTIMISING = [n for n in METHODS.names() if not METHODS.get(n).selects_real]
BASES = [n for n in METHODS.names() if METHODS.get(n).distiller is not None]


@pytest.fixture(scope="module")
def digits(smoke_digits):
    return smoke_digits


@pytest.fixture(scope="module")
def experts_dir(smoke_experts):
    return smoke_experts


def _config(name, experts_dir, every=True):
    ipc, overrides = copy.deepcopy(TINY[name])
    if name == "mtt":
        overrides["experts"] = str(experts_dir)
    if every:  # a checkpoint after every round, so a kill can land inside a segment
        target = overrides["base_config"] if "base_config" in overrides else overrides
        target["checkpoint_every"] = 1
    return ipc, resolve_config(name, "quick", "digits", ipc, overrides)


class Killed(Exception):
    pass


class KillAfter(Checkpointer):
    """A checkpointer that dies right after its n-th save, as a killed process would."""

    def __init__(self, directory, n):
        super().__init__(directory)
        self.left = n

    def save(self, *args, **kwargs):
        super().save(*args, **kwargs)
        self.left -= 1
        if self.left == 0:
            raise Killed


def test_the_lists_cover_the_registry():
    assert {"idc", "dm", "mtt", "edd", "pdd"} <= set(OPTIMISING)
    assert {"dc", "dsa", "idc", "dm"} <= set(BASES)


class Counting(Checkpointer):
    saves = 0

    def save(self, *args, **kwargs):
        super().save(*args, **kwargs)
        self.saves += 1


@pytest.mark.parametrize("name", OPTIMISING)
def test_killed_and_resumed_equals_uninterrupted(name, digits, experts_dir, tmp_path):
    """Killed after the 2nd save and after the next-to-last one (for EDD: inside its first
    and its last segment), a resumed run ends bitwise where the uninterrupted one does."""
    ipc, cfg = _config(name, experts_dir)
    run = METHODS.get(name).run
    counting = Counting(tmp_path / "count")
    whole = set_hash(run(DistillContext(digits, ipc, 0, checkpoint=counting), cfg))
    for n in sorted({2, counting.saves - 1}):
        ck = tmp_path / f"ck{n}"
        with pytest.raises(Killed):
            run(DistillContext(digits, ipc, 0, checkpoint=KillAfter(ck, n)), cfg)
        resumed = run(DistillContext(digits, ipc, 0, checkpoint=Checkpointer(ck)), cfg)
        assert set_hash(resumed) == whole, f"killed after save {n} of {counting.saves}"


@pytest.mark.parametrize("name", OPTIMISING)
def test_nan_images_stop_the_run_naming_the_iteration(name, digits, experts_dir, monkeypatch):
    ipc, cfg = _config(name, experts_dir, every=False)
    original = torch.optim.SGD.step

    def poisoned(self, *args, **kwargs):  # every SGD update (images, θ, α) turns to NaN
        out = original(self, *args, **kwargs)
        with torch.no_grad():
            for group in self.param_groups:
                for p in group["params"]:
                    p.fill_(float("nan"))
        return out

    monkeypatch.setattr(torch.optim.SGD, "step", poisoned)
    with pytest.raises(NumericalError, match=r"iteration \d+"):
        METHODS.get(name).run(DistillContext(digits, ipc, 0), cfg)


@pytest.mark.parametrize("base", BASES)
def test_edd_with_one_segment_is_its_base(base, digits):
    ipc, base_overrides = TINY[base]
    base_cfg = resolve_config(base, "quick", "digits", ipc, base_overrides)
    alone = set_hash_images(METHODS.get(base).run(DistillContext(digits, ipc, 0), base_cfg))
    edd_cfg = resolve_config(
        "edd",
        "quick",
        "digits",
        ipc,
        {"base": base, "base_config": base_overrides, "segments": [ipc]},
    )
    wrapped = METHODS.get("edd").run(DistillContext(digits, ipc, 0), edd_cfg)
    assert set_hash_images(wrapped) == alone


def set_hash_images(result) -> str:
    """Images and labels only: EDD's set also records each image's segment."""
    syn = result.synthetic
    return str(hash((syn.images.numpy().tobytes(), syn.labels.numpy().tobytes())))
