#!/bin/bash
# 1 process x 2 threads vs 2 processes x 1 thread (torchrun, gloo), CIFAR-10 shape, IDC ipc 10
cd "$(dirname "$0")/.."
A=(--method idc --dataset imagefolder --data-dir ../shared/data/cifar10-jpeg --ipc 10 --seed 0 --set method.iterations=8 --repeats 1 --no-baselines --no-tsne --overwrite)
for rep in 1 2; do
OMP_NUM_THREADS=2 exdistill distill "${A[@]}" --out runs/par-1x2-r$rep > runs/par-1x2-r$rep.log 2>&1
OMP_NUM_THREADS=1 torchrun --standalone --nproc-per-node 2 -m exdistill distill "${A[@]}" --out runs/par-2x1-r$rep > runs/par-2x1-r$rep.log 2>&1
done
for d in runs/par-*-r?; do python -c "import json;m=json.load(open('$d/metrics.json'));print('$d', m['distill_seconds'], m.get('precision'))"; done
