#!/usr/bin/env bash
# GPU check of the speed-and-scale work (docs/scale.md), one script, < 8 minutes on one H200:
#
#   1. matching-step speed against the per-class reference loop (benchmarks/matching_speed.py)
#      at the CIFAR-10 (case a) and Tiny-ImageNet (case c) shapes, on the device;
#   2. host syncs inside the matching step and θ's update between matches
#      (torch.cuda.set_sync_debug_mode: must be 0; and the `gpu` tests) and the
#      fast-path options (channels_last, bf16 autocast, torch.compile): s/step, GPU memory peak
#      and the largest image difference against the plain fp32 run;
#   3. scaling: one outer iteration of idc and edd at 10, 50 and 200 classes
#      (benchmarks/scaling.py; time, peak RSS and peak GPU memory, linearity);
#   4. a short idc and edd distillation of CIFAR-10 (JPEG) at ipc 10 (a few hundred matching
#      steps) with a quick evaluation, through the unchanged CLI;
#   5. (GPU only) real Tiny-ImageNet from ../shared/data/tiny-imagenet (Hugging Face parquet,
#      200 classes, 64×64): 200 matching steps of idc and of edd at the paper's settings (width
#      128, ConvNet-4, 100 steps per outer iteration), timed, plus the matching step at bf16.
#      The device machine receives ../shared with the working tree; decoding the parquet shards
#      takes about 40 s and 6 GB the first time.
#
# Usage:  bash benchmarks/gpu_check.sh          (GPU: --device cuda)
#         bash benchmarks/gpu_check.sh --cpu    (the same steps with tiny budgets, ~2-3 min)
#
# Data: step 4 reads an ImageFolder subset of CIFAR-10 (JPEG) from .devdata/cifar10-jpeg
# (git-ignored). If it is missing, this script copies the first 2000 train and 500 test images
# per class from ../shared/data/cifar10-jpeg (about 23 MB; checked to stay under 64 MiB so it
# can travel to a GPU machine with the working tree). On a machine without ../shared, make the
# subset first (bash benchmarks/gpu_check.sh --data-only) and bring .devdata along.
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=gpu
case "${1:-}" in
  --cpu) MODE=cpu ;;
  --data-only) MODE=data ;;
  "") ;;
  *) echo "usage: bash benchmarks/gpu_check.sh [--cpu|--data-only]" >&2; exit 2 ;;
esac

DATA=.devdata/cifar10-jpeg
SOURCE=../shared/data/cifar10-jpeg
TRAIN_PER_CLASS=2000
TEST_PER_CLASS=500
LIMIT_BYTES=$((64 * 1024 * 1024))
OUT=runs/gpu_check
export EXDISTILL_CACHE="$PWD/runs/gpu_check-cache"  # decoded-data cache: not carried

# ------------------------------------------------------------------------------ data subset
if [[ ! -f "$DATA/.complete" ]]; then
  if [[ ! -d "$SOURCE" ]]; then
    echo "gpu_check: $DATA is missing and $SOURCE is not here to copy it from" >&2
    exit 1
  fi
  echo "== copying a CIFAR-10 (JPEG) subset: $TRAIN_PER_CLASS train, $TEST_PER_CLASS test per class"
  rm -rf "$DATA"
  python - "$SOURCE" "$DATA" "$TRAIN_PER_CLASS" "$TEST_PER_CLASS" <<'EOF'
import shutil, sys
from pathlib import Path
src, dst, per = Path(sys.argv[1]), Path(sys.argv[2]), {"train": int(sys.argv[3]), "test": int(sys.argv[4])}
for split, n in per.items():
    for cls in sorted(p for p in (src / split).iterdir() if p.is_dir()):
        out = dst / split / cls.name
        out.mkdir(parents=True)
        for f in sorted(cls.iterdir())[:n]:
            shutil.copyfile(f, out / f.name)
EOF
  touch "$DATA/.complete"
fi
size=$(du -sb "$DATA" | cut -f1)
echo "== data: $DATA, $((size / 1024)) KiB"
if (( size > LIMIT_BYTES )); then
  echo "gpu_check: $DATA is $size bytes, over the 64 MiB a device run can carry" >&2
  exit 1
fi
[[ $MODE == data ]] && exit 0

if [[ $MODE == gpu ]]; then
  DEVICE=cuda
  SPEED_STEPS=5
  SCALING=(--cases cifar10,tiny50,tiny200)
  # ipc 10: 3 outer iterations × 100 matching steps (idc), EDD the same budget over 2 segments
  DISTILL=(--ipc 10 --preset quick --set method.iterations=3 --set method.match_steps=100
           --set method.model_options.width=128 --repeats 2 --set run.protocol=idc-quick)
  EDD=(--ipc 10 --preset quick --set method.base_config.iterations=4
       --set method.base_config.match_steps=75 --set method.base_config.model_options.width=128
       --repeats 2 --set run.protocol=idc-quick --set method.filter.max_steps=300)
  FAST=(20 10 128)  # matching steps, classes, width
else
  DEVICE=cpu
  export OMP_NUM_THREADS=1
  SPEED_STEPS=1
  SCALING=(--quick --cases cifar10,tiny50)
  DISTILL=(--ipc 1 --preset quick --set method.iterations=2 --set method.match_steps=2
           --set method.model_options.width=16 --set method.batch_real=16 --repeats 1
           --set run.protocol=idc-smoke)
  EDD=(--ipc 2 --preset quick --set method.base_config.iterations=2
       --set method.base_config.match_steps=2 --set method.base_config.model_options.width=16
       --set method.base_config.batch_real=16 --repeats 1 --set run.protocol=idc-smoke
       --set method.filter.max_steps=20 --set method.filter_model_options.width=16)
  FAST=(2 3 16)
fi
echo "== mode $MODE, device $DEVICE, $(python -c 'import torch; print("torch", torch.__version__)')"
if [[ $DEVICE == cuda ]]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
fi
start=$SECONDS
mkdir -p $OUT

# ------------------------------------------------------------------------------ 1. matching speed
echo; echo "== 1. matching step vs the reference loop"
if [[ $DEVICE == cuda ]]; then
  # TF32 convolutions reorder sums: gradients agree to ~1e-3 there (the loss check stays 1e-4)
  python benchmarks/matching_speed.py --device cuda --case a --steps $SPEED_STEPS --grad-rtol 1e-2 | tail -4
  python benchmarks/matching_speed.py --device cuda --case a --steps $SPEED_STEPS --precision bf16 | tail -4
  python benchmarks/matching_speed.py --device cuda --case c --steps $SPEED_STEPS --grad-rtol 1e-2 | tail -4
else  # CPU: the digits case (CIFAR shape takes ~30 s a step here)
  python benchmarks/matching_speed.py --case b --steps $SPEED_STEPS --threads 1 | tail -4
fi

# ------------------------------------------------------------------------------ 2. syncs, options
echo; echo "== 2. host syncs in the matching step and θ's update; fast-path options"
if [[ $DEVICE == cuda ]]; then
  python -m pytest -q -m gpu tests/test_transfer.py | tail -2 || echo "gpu tests FAILED"
fi
python - "$DEVICE" "${FAST[@]}" <<'EOF'
import sys, time, warnings
from dataclasses import replace
import torch
sys.path.insert(0, "benchmarks")
from scaling import Shape, random_dataset
from exdistill.methods.base import DistillContext
from exdistill.methods.gradient import GradientMatching, GradMatchConfig
from exdistill.methods.matching import LAYERS, match_and_backward
from exdistill.seeding import generator
from exdistill.synthetic import SyntheticSet, sample_real
from exdistill.train import Trainer

device, (steps, classes, width) = sys.argv[1], map(int, sys.argv[2:5])
cuda = device == "cuda"
ds = random_dataset(Shape(classes, 32), 200)
ctx = DistillContext(ds, 10, 0, torch.device(device))
init = SyntheticSet.from_real(ds, sample_real(ds, 40, generator(0, "init")), 2)

def matcher(**options):
    cfg = GradMatchConfig(
        model_options={"width": width}, iterations=1, match_steps=steps, checkpoint_every=0,
        **options,
    )
    return GradientMatching(cfg, ctx)

# (a) host syncs during matching steps (draws, transfers, forward, double backward, backward)
m = matcher()
syn = init.images.to(device).requires_grad_(True)
members = [torch.nonzero(init.labels.to(device) == c).flatten() for c in range(classes)]
n_syn = [len(x) * 4 for x in members]
net = m.new_network(generator(0, "net"))
params = LAYERS.get("conv")(net)
gen = generator(0, "steps")
def one_step():
    terms = m.draw_terms(range(classes), m.full_pool, n_syn, None, 0.0, gen)
    make = lambda chunk: m.materialise([t for t in terms if t.label in chunk], syn, members, None)
    return match_and_backward(net, params, m.distance, make, list(range(classes)), m.augment,
                              gen, 0, inputs=[syn], sync=False)

def count_syncs(fn, times=3):
    """Host syncs in ``times`` calls of fn after one warm-up call (pinned buffers, kernels)."""
    fn()
    if not cuda:
        return "n/a on CPU"
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(times):
            fn()
    torch.cuda.set_sync_debug_mode(0)
    return sum("synchroniz" in str(w.message) for w in caught)

print(f"host syncs in 3 matching steps: {count_syncs(one_step)}")

# ... and in θ's update between matches (IDC: real batches, augmentation, CutMix)
# CutMix on every step, so that its permutation's copy is exercised
trainer = Trainer(net, replace(m.cfg.net, cutmix_prob=1.0), total_steps=1 << 30, generator=gen)
labels = init.labels.to(device)
syncs = count_syncs(lambda: m.update_network(trainer, syn, labels, gen))
print(f"host syncs in 3 updates of θ ({m.cfg.net_steps} steps each): {syncs}")

# (b) options: one outer iteration each, against plain fp32
variants = {"plain": {}, "channels_last": {"channels_last": True}, "compile": {"compile": True}}
if cuda:
    variants["bf16"] = {"autocast_bf16": True}
    variants["bf16+channels_last"] = {"autocast_bf16": True, "channels_last": True}
ref = None
print(f"{'option':<20} {'s/step':>8} {'peak GiB':>9} {'max |Δ image|':>14}")
for name, options in variants.items():
    mm = matcher(**options)
    for rep in range(2):  # the first run compiles / warms up; the second is timed
        if cuda:
            torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        out = mm.distill_segment(init.images, init.labels, mm.full_pool, 1, 10, generator(0, "d"))
        if cuda:
            torch.cuda.synchronize()
        seconds = (time.perf_counter() - t) / steps
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    ref = out if ref is None else ref
    print(f"{name:<20} {seconds:8.4f} {peak:9.2f} {(out - ref).abs().max().item():14.3e}", flush=True)
EOF

# ------------------------------------------------------------------------------ 3. scaling
echo; echo "== 3. one outer iteration, 10 to 200 classes"
python benchmarks/scaling.py --device $DEVICE "${SCALING[@]}" --json $OUT/scaling.json

# ------------------------------------------------------------------------------ 4. distillation
echo; echo "== 4. CIFAR-10 (JPEG) distillation + quick evaluation"
for method in idc edd; do
  if [[ $method == idc ]]; then args=("${DISTILL[@]}"); else args=("${EDD[@]}"); fi
  t0=$SECONDS
  if ! python -m exdistill distill --method $method --dataset imagefolder --data-dir "$DATA" \
      --device $DEVICE --no-baselines --no-tsne "${args[@]}" --out $OUT/$method --overwrite \
      > $OUT/$method.stdout 2> $OUT/$method.stderr; then
    tail -20 $OUT/$method.stderr >&2
    exit 1
  fi
  tail -8 $OUT/$method.stdout
  python - "$OUT/$method/metrics.json" "$method" "$((SECONDS - t0))" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))
print(f"{sys.argv[2]}: distill {m['distill_seconds']} s, eval {m['eval_seconds']} s, "
      f"total {sys.argv[3]} s, test acc {100 * m['test_acc_mean']:.2f} %")
EOF
done
if [[ $DEVICE == cuda ]]; then nvidia-smi --query-gpu=memory.used --format=csv,noheader || true; fi
# ------------------------------------------------------------------------------ 5. Tiny-ImageNet
TINY=../shared/data/tiny-imagenet
if [[ $DEVICE == cuda && -d $TINY ]]; then
  echo; echo "== 5. Tiny-ImageNet (real, parquet), paper settings, 200 matching steps each"
  python benchmarks/matching_speed.py --device cuda --case c --steps $SPEED_STEPS \
    --precision bf16 | tail -4
  PAPER=(--ipc 10 --preset paper --repeats 1 --set run.protocol=idc-quick --no-baselines --no-tsne)
  for method in idc edd; do
    if [[ $method == idc ]]; then
      budget=(--set method.iterations=2)
    else  # the same 200 steps over EDD's two segments; a filter network capped at 500 steps
      budget=(--set method.base_config.iterations=2 --set method.filter.max_steps=500)
    fi
    t0=$SECONDS
    if ! python -m exdistill distill --method $method --dataset tiny-imagenet --data-dir "$TINY" \
        --device $DEVICE "${PAPER[@]}" "${budget[@]}" --out $OUT/tiny-$method --overwrite \
        > $OUT/tiny-$method.stdout 2> $OUT/tiny-$method.stderr; then
      tail -20 $OUT/tiny-$method.stderr >&2  # a failed case is reported, the script goes on
      continue
    fi
    python - "$OUT/tiny-$method/metrics.json" "$method" "$((SECONDS - t0))" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))
print(f"tiny {sys.argv[2]}: distill {m['distill_seconds']} s for 200 matching steps "
      f"({m['distill_seconds'] / 200:.3f} s/step), eval {m['eval_seconds']} s, "
      f"total {sys.argv[3]} s, test acc {100 * m['test_acc_mean']:.2f} %")
EOF
  done
elif [[ $DEVICE == cuda ]]; then
  echo; echo "== 5. skipped: $TINY is not here"
fi
echo; echo "== gpu_check ($MODE) done in $((SECONDS - start)) s"

