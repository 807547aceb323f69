"""Expert trajectories for trajectory matching (MTT): networks trained on real data, per epoch.

An expert is a network trained on the real training split by the library's one loop
(``train.train_classifier``); its parameters after every epoch — epoch 0 is the initialisation —
are its trajectory. ``mtt`` starts a student at epoch t of a random expert and asks that a few
steps on the synthetic set land where the expert stood at epoch t + M.

On disk (``exdistill experts --out DIR``)::

    DIR/manifest.json                      provenance and the sha256 of every file below
    DIR/expert_000/epoch_000.safetensors   param.<name>, buffer.<name>, state.rng,
    DIR/expert_000/epoch_001.safetensors   state.momentum.<name> (only with momentum)
    ...

Each epoch file is written atomically, then the manifest (also atomically), so a killed run
leaves a manifest naming only whole, checksummed files. ``resume=True`` verifies those, skips
them and continues every expert from its last good epoch. The file holds the training
generator's state (and the optimiser's momentum, if any) besides the parameters, so the
continued trajectory is bit-identical to an uninterrupted one on CPU. No pickle: loading
experts someone sent you cannot run code.

The recipe ``mtt`` is the official ``buffer.py``: SGD lr 0.01, no momentum, no weight decay,
batch 256, no schedule, DSA augmentation of the real batches (one op per batch, drawn per
image), 50 epochs, 100 experts. Not reproduced: ZCA whitening, which MTT applies to CIFAR for
its best rows; experts here (and ``mtt``) see the mean/std-normalised pixels every other method
sees.

Example:
    >>> cfg = resolve_expert_config("quick", "digits")
    >>> summary = train_experts(load_dataset("digits"), cfg, "experts/digits")
    >>> ExpertSet("experts/digits").parameters(0, 1)["classifier.weight"].shape
    torch.Size([10, 256])
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from exdistill import __version__
from exdistill.augment import DSA_STRATEGY, Augment
from exdistill.config import config_hash, first_difference, merge, require, to_dict
from exdistill.data.base import ImageDataset, small_images
from exdistill.errors import ConfigError, DataError, NumericalError
from exdistill.evaluation import PROTOCOLS
from exdistill.io import atomic_write, sha256_file, write_json
from exdistill.models import build_model, quick_model_options
from exdistill.progress import ProgressFactory, no_progress
from exdistill.seeding import derive_seed, generator
from exdistill.train import TrainConfig, Trainer, accuracy, train_classifier

FORMAT = "exdistill-experts"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"

# The official buffer.py: SGD(lr=0.01, momentum=0, weight_decay=0), batch_train 256, DSA on.
MTT_EXPERT_TRAIN = TrainConfig(
    epochs=50,
    batch_size=256,
    lr=0.01,
    momentum=0.0,
    weight_decay=0.0,
    milestones=(),
    augment=DSA_STRATEGY,
    augment_mode="single",
    cutmix_prob=0.0,
)


@dataclass
class ExpertConfig:
    """How to train expert trajectories. Defaults: MTT's, 100 ConvNets × 50 epochs."""

    model: str = "convnet"
    model_options: dict[str, Any] = field(default_factory=dict)
    num_experts: int = 100
    train: TrainConfig = field(default_factory=lambda: replace(MTT_EXPERT_TRAIN))

    @property
    def epochs(self) -> int:
        return self.train.epochs

    def validate(self) -> None:
        require(self.num_experts >= 1, f"num_experts: must be ≥ 1, got {self.num_experts}")
        self.train.validate()
        # A trajectory is a list of whole epochs: a step cap would end one in the middle.
        require(self.train.max_steps == 0, "train.max_steps: experts train whole epochs; use 0")
        if self.train.augment:
            Augment(self.train.augment, mode=self.train.augment_mode)


def expert_recipe(name: str) -> TrainConfig:
    """The training recipe ``name``: ``mtt`` (official buffer.py), or any evaluation protocol's
    (``exdistill`` protocols; its step cap dropped, its network options not taken)."""
    if name == "mtt":
        return replace(MTT_EXPERT_TRAIN)
    if name not in PROTOCOLS:
        choices = ", ".join(["mtt", *PROTOCOLS.names()])
        raise ConfigError(f"protocol: unknown '{name}' for experts; choose from: {choices}")
    return replace(PROTOCOLS.get(name).train, max_steps=0)


def expert_presets(preset: str, dataset: str) -> dict[str, Any]:
    """Config values of a preset. ``paper``: MTT's 100 experts × 50 epochs, ConvNet width 128.

    ``quick`` (2 CPU cores): a few short experts of width ``QUICK_WIDTH`` — the width of
    the ``*-quick`` evaluation protocols, so the step size ``mtt`` learns is learned for the
    network it is evaluated on. Digits (1211 training images, 5 steps of 256 per epoch) uses
    batches of 64 (19 steps): MTT's CIFAR experts take 196 steps per epoch, and 5 would
    leave consecutive epochs almost equal. Evidence (digits, width 64, seed 0, 1 thread): 5
    experts × 15 epochs in 20 s, validation accuracy 91.3 % on average (batch 256: 86.0 %
    after 15 epochs).
    """
    if preset == "paper":
        return {"num_experts": 100, "train": {"epochs": 50}}  # whatever the recipe's epochs
    if preset != "quick":
        raise ConfigError(f"preset: unknown '{preset}'; choose from: quick, paper")
    if small_images(dataset):
        return {
            "num_experts": 5,
            "model_options": quick_model_options(),
            "train": {"epochs": 15, "batch_size": 64},
        }
    # 32×32 / 28×28 sets: ~0.8 s per step of 256 images on one loaded core, ~200 steps per
    # epoch, so 2 experts × 6 epochs is about half an hour; mtt quick starts at epochs < 4.
    return {"num_experts": 2, "model_options": quick_model_options(), "train": {"epochs": 6}}


def resolve_expert_config(
    preset: str,
    dataset: str,
    protocol: str = "mtt",
    overrides: dict[str, Any] | None = None,
) -> ExpertConfig:
    """Defaults (recipe ``protocol``) ← preset(dataset) ← overrides; validated."""
    cfg = ExpertConfig(train=expert_recipe(protocol))
    cfg = merge(cfg, expert_presets(preset, dataset))
    cfg = merge(cfg, overrides or {})
    cfg.validate()
    return cfg


# ----------------------------------------------------------------------------- files
def epoch_file(expert: int, epoch: int) -> str:
    """Path of an epoch file relative to the experts directory."""
    return f"expert_{expert:03d}/epoch_{epoch:03d}.safetensors"


def _dataset_record(dataset: ImageDataset) -> dict[str, Any]:
    """What must match between experts and the data a student is matched on."""
    meta = dataset.meta()
    meta.pop("source", None)  # the path may move; the content below identifies the data
    meta["train_images"] = len(dataset.train)
    return meta


def _header(dataset: ImageDataset, cfg: ExpertConfig, seed: int) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "library_version": __version__,
        "seed": seed,
        "dataset": _dataset_record(dataset),
        "config": to_dict(cfg),
    }


def _check_relative(directory: Path, name: Any) -> Path:
    """A manifest's file name, refused unless it stays inside ``directory``."""
    if not isinstance(name, str) or not name:
        raise DataError(f"{directory / MANIFEST}: a file entry is not a path")
    pure = PurePosixPath(name)
    if pure.is_absolute() or ".." in pure.parts:
        raise DataError(f"{directory / MANIFEST}: file '{name}' lies outside the directory")
    return directory / pure


def read_manifest(directory: str | Path) -> dict[str, Any]:
    """The manifest of an experts directory; ConfigError if there is none, DataError if bad."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ConfigError(
            f"experts: {directory} is not a directory (train experts first: "
            f"exdistill experts --out {directory})"
        )
    path = directory / MANIFEST
    if not path.is_file():
        raise ConfigError(f"experts: {directory} holds no {MANIFEST} (not an experts directory)")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not valid JSON ({type(err).__name__})") from None
    ok = (
        isinstance(manifest, dict)
        and manifest.get("format") == FORMAT
        and isinstance(manifest.get("config"), dict)
        and isinstance(manifest.get("dataset"), dict)
        and isinstance(manifest.get("experts"), list)
        and all(
            isinstance(e, dict)
            and isinstance(e.get("epochs"), list)
            and all(isinstance(r, dict) and isinstance(r.get("sha256"), str) for r in e["epochs"])
            for e in manifest["experts"]
        )
    )
    if not ok:
        raise DataError(f"{path}: not an exdistill experts manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise DataError(
            f"{path}: format version {manifest.get('format_version')!r}, this library reads "
            f"{FORMAT_VERSION}"
        )
    for expert in manifest["experts"]:
        for record in expert["epochs"]:
            _check_relative(directory, record.get("file"))
    return manifest


def load_verified(
    directory: Path, record: dict[str, Any], verify: bool = True
) -> dict[str, torch.Tensor]:
    """The tensors of one epoch file, after checking its sha256 against the manifest
    (``verify=False``: the caller already checked this file)."""
    path = _check_relative(directory, record.get("file"))
    if not path.is_file():
        raise DataError(f"{path}: not found (the experts manifest names it)")
    if verify and sha256_file(path) != record["sha256"]:
        raise DataError(f"{path}: checksum mismatch (corrupted or modified expert file)")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise DataError(f"{path}: not a readable safetensors file ({err})") from None


def _verified_prefix(directory: Path, records: list[dict[str, Any]]) -> int:
    """How many leading epoch files of an expert exist and match their checksum."""
    for i, record in enumerate(records):
        path = _check_relative(directory, record.get("file"))
        if not path.is_file() or sha256_file(path) != record["sha256"]:
            return i
    return len(records)


def manifest_digest(directory: str | Path) -> str:
    """What an experts directory holds, as a short hash: its recipe, data, seed and the sha256
    of every epoch file, in order. Not where it lies, and not the library version that last
    wrote the manifest (``--resume`` rewrites it, even with nothing left to train)."""
    manifest = read_manifest(directory)
    content = {key: manifest[key] for key in ("config", "dataset", "seed") if key in manifest}
    content["experts"] = [[r["sha256"] for r in e["epochs"]] for e in manifest["experts"]]
    return config_hash(content)


class ExpertSet:
    """A read-only experts directory: what ``mtt`` matches against.

    Example:
        >>> experts = ExpertSet("experts/digits")
        >>> start = experts.parameters(experts.complete()[0], 2)  # {name: tensor}
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.manifest = read_manifest(self.directory)
        config = self.manifest["config"]
        train = config.get("train") if isinstance(config.get("train"), dict) else {}
        self.model = config.get("model")
        self.model_options = config.get("model_options") or {}
        self.epochs = train.get("epochs")
        self.train_lr = train.get("lr")
        self.train_momentum = train.get("momentum", 0.0)
        self.dataset: dict[str, Any] = self.manifest["dataset"]
        self._verified: set[str] = set()  # files whose checksum was checked (once each)
        if not isinstance(self.epochs, int) or not isinstance(self.model, str):
            raise DataError(f"{self.directory / MANIFEST}: config lacks model or train.epochs")

    def complete(self) -> list[int]:
        """Indices of the experts whose every epoch (0..epochs) is recorded."""
        return [
            i for i, e in enumerate(self.manifest["experts"]) if len(e["epochs"]) == self.epochs + 1
        ]

    def parameters(
        self, expert: int, epoch: int, device: torch.device | str = "cpu"
    ) -> dict[str, torch.Tensor]:
        """Parameters ``{name: tensor}`` of ``expert`` after ``epoch`` epochs, checksum-verified."""
        records = self.manifest["experts"][expert]["epochs"]
        if not 0 <= epoch < len(records):
            raise DataError(f"{self.directory}: expert {expert} has no epoch {epoch}")
        record = records[epoch]
        tensors = load_verified(self.directory, record, record["file"] not in self._verified)
        self._verified.add(record["file"])
        return {k[6:]: v.to(device) for k, v in tensors.items() if k.startswith("param.")}


# ----------------------------------------------------------------------------- training
@dataclass
class ExpertsSummary:
    """What one ``train_experts`` call did."""

    directory: Path
    trained: int = 0  # epoch files written (epoch 0 included)
    skipped: int = 0  # verified epoch files kept from an earlier run
    repaired: int = 0  # listed files that failed verification and were trained again
    val_accs: list[float | None] = field(default_factory=list)  # per expert, final epoch


def _state_tensors(model: nn.Module, trainer: Trainer) -> dict[str, torch.Tensor]:
    out = {f"param.{k}": v.detach().cpu().contiguous() for k, v in model.named_parameters()}
    out.update({f"buffer.{k}": v.detach().cpu().contiguous() for k, v in model.named_buffers()})
    out["state.rng"] = trainer.generator.get_state()
    for name, p in model.named_parameters():
        buf = trainer.optimizer.state.get(p, {}).get("momentum_buffer")
        if buf is not None:
            out[f"state.momentum.{name}"] = buf.detach().cpu().contiguous()
    return out


def _restore(model: nn.Module, trainer: Trainer, tensors: dict[str, torch.Tensor], where: str):
    params, buffers = dict(model.named_parameters()), dict(model.named_buffers())
    names = {k[6:] for k in tensors if k.startswith("param.")}
    if names != set(params) or "state.rng" not in tensors:
        raise DataError(f"{where}: its parameters do not fit the configured model")
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(tensors[f"param.{name}"])
            buf = tensors.get(f"state.momentum.{name}")
            if buf is not None:
                trainer.optimizer.state[p]["momentum_buffer"] = buf.to(p).clone()
        for name, b in buffers.items():
            if f"buffer.{name}" in tensors:
                b.copy_(tensors[f"buffer.{name}"])
    trainer.generator.set_state(tensors["state.rng"])


def _resumable(directory: Path, header: dict[str, Any], num_experts: int) -> list[dict]:
    """The expert entries of the run in ``directory`` (checked to have the same config)."""
    old = read_manifest(directory)
    new = json.loads(json.dumps(header))  # JSON types, as the manifest holds them
    new.pop("library_version")  # a newer library may continue an older run
    old_n, new_n = old["config"].pop("num_experts", None), new["config"].pop("num_experts")
    diff = first_difference({k: old.get(k) for k in new}, new)
    if diff:
        raise ConfigError(f"resume: the experts in {directory} were made differently ({diff})")
    if isinstance(old_n, int) and new_n < old_n:
        raise ConfigError(
            f"num_experts: {directory} holds {old_n} experts; resume with at least that many"
        )
    return old["experts"]


class _ExpertsRun:
    """The state of one ``train_experts`` call: the manifest entries and what was done."""

    def __init__(self, out: Path, header: dict[str, Any], cfg: ExpertConfig) -> None:
        self.out, self.header, self.cfg = out, header, cfg
        self.entries: list[dict[str, Any]] = []
        self.summary = ExpertsSummary(out)

    def adopt(self, old: list[dict[str, Any]], seed: int) -> list[int]:
        """Entries for every expert, keeping the verified files of ``old``; epochs done each."""
        for i in range(self.cfg.num_experts):
            seeds = {
                "init_seed": derive_seed(seed, "expert", i, "init"),
                "train_seed": derive_seed(seed, "expert", i, "train"),
            }
            if i < len(old):
                records = old[i]["epochs"]
                kept = _verified_prefix(self.out, records)
                self.summary.repaired += len(records) - kept
                self.entries.append({**old[i], **seeds, "index": i, "epochs": records[:kept]})
            else:
                self.entries.append({"index": i, **seeds, "epochs": [], "val_acc": None})
        done = [len(e["epochs"]) for e in self.entries]
        self.summary.skipped = sum(done)
        return done

    def write_manifest(self) -> None:
        complete = all(len(e["epochs"]) == self.cfg.epochs + 1 for e in self.entries)
        write_json(
            self.out / MANIFEST, {**self.header, "complete": complete, "experts": self.entries}
        )

    def save_epoch(self, i: int, epoch: int, net: nn.Module, trainer: Trainer) -> None:
        """Write expert ``i``'s state after ``epoch`` epochs, then record it in the manifest."""
        tensors = _state_tensors(net, trainer)
        if not all(torch.isfinite(v).all() for k, v in tensors.items() if k[:6] == "param."):
            raise NumericalError(f"expert {i}: parameters hold NaN/Inf after epoch {epoch}")
        name, digest = epoch_file(i, epoch), ""

        def write(path: Path) -> None:
            nonlocal digest
            save_file(tensors, str(path), metadata={"format": FORMAT})
            digest = sha256_file(path)

        atomic_write(self.out / name, write)
        self.entries[i]["epochs"].append({"file": name, "sha256": digest})
        self.summary.trained += 1
        self.write_manifest()


def _build(cfg: ExpertConfig, dataset: ImageDataset, gen: torch.Generator) -> nn.Module:
    return build_model(
        cfg.model,
        dataset.channels,
        dataset.num_classes,
        dataset.image_size,
        generator=gen,
        **cfg.model_options,
    )


def train_experts(
    dataset: ImageDataset,
    cfg: ExpertConfig,
    out: str | Path,
    seed: int = 0,
    resume: bool = False,
    device: str | torch.device = "cpu",
    progress: ProgressFactory = no_progress,
) -> ExpertsSummary:
    """Train ``cfg.num_experts`` experts on ``dataset``'s training split into ``out``.

    Expert ``i`` draws its initial weights from ``generator(seed, "expert", i, "init")`` and
    its batches and augmentations from ``generator(seed, "expert", i, "train")``, so expert i
    is the same whichever experts ran before it. With ``resume``, the files ``out``'s manifest
    lists are verified and kept, and each expert continues after its last good epoch; the
    config must match the run's (more experts may be asked for). Without it, ``out`` must be
    empty or absent.
    """
    # --- check everything before writing anything
    cfg.validate()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"out: {out} exists and is not a directory")
    header = _header(dataset, cfg, seed)
    old: list[dict[str, Any]] = []
    has_manifest = (out / MANIFEST).is_file()
    if resume and has_manifest:
        old = _resumable(out, header, cfg.num_experts)
    elif out.is_dir() and any(out.iterdir()):
        hint = "pass --resume to continue it" if has_manifest else "choose an empty directory"
        raise ConfigError(f"out: {out} already holds files; {hint}")
    _build(cfg, dataset, generator(seed, "probe"))  # a bad model option fails here, not later
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("**/.*.tmp"):  # temp files of a write that a kill interrupted
        stale.unlink(missing_ok=True)

    run = _ExpertsRun(out, header, cfg)
    done = run.adopt(old, seed)
    run.write_manifest()

    # --- train what is missing
    images, labels = dataset.normalized("train")
    val_x, val_y = dataset.normalized("val")
    n, last_epoch = int(labels.shape[0]), cfg.epochs
    per_epoch = math.ceil(n / cfg.train.batch_size)
    todo = sum(last_epoch - max(d - 1, 0) for d in done if d <= last_epoch) * per_epoch
    with progress(todo, "experts") as bar:
        for i, entry in enumerate(run.entries):
            if done[i] > last_epoch:
                run.summary.val_accs.append(entry.get("val_acc"))
                continue
            net = _build(cfg, dataset, generator(seed, "expert", i, "init")).to(device)
            train_gen = generator(seed, "expert", i, "train")
            trainer = Trainer(net, cfg.train, cfg.train.total_steps(n), train_gen)
            if done[i] == 0:
                run.save_epoch(i, 0, net, trainer)
            else:  # continue after the last good epoch: parameters, momentum, generator
                last = done[i] - 1
                tensors = load_verified(out, entry["epochs"][last])
                _restore(net, trainer, tensors, str(out / epoch_file(i, last)))
                trainer.steps_done = last * per_epoch

            def on_epoch(epoch: int, trainer: Trainer, i: int = i, net: nn.Module = net) -> None:
                run.save_epoch(i, epoch, net, trainer)
                bar.set_postfix_str(f"expert {i} epoch {epoch}")

            train_classifier(net, images, labels, cfg.train, train_gen, bar, on_epoch, trainer)
            entry["val_acc"] = accuracy(net, val_x, val_y) if len(val_y) else None
            run.summary.val_accs.append(entry["val_acc"])
            run.write_manifest()
    return run.summary


__all__ = [
    "ExpertConfig",
    "ExpertSet",
    "ExpertsSummary",
    "manifest_digest",
    "MTT_EXPERT_TRAIN",
    "expert_presets",
    "expert_recipe",
    "read_manifest",
    "resolve_expert_config",
    "train_experts",
]
