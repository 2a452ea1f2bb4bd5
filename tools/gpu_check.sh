#!/usr/bin/env bash
# Checks for a GPU machine; run from the repository root: `bash tools/gpu_check.sh` (results in the folder
# RESULTS, default /tmp/gpu_check):
#   1. the same synthetic category fitted on the CPU and on the GPU: metrics and statistics agree;
#   2. torchrun with one GPU equals the plain run;
#   3. the MVTec-shaped suite (15 categories, MVTec AD's counts and sizes), WRN-50-2, k = 300, model files written;
#   4. the same suite twice with --cache: an empty cache, then the warm one (what a sweep's later runs cost).
# SCALE < 1 shrinks the suite for a dry run on a CPU (DEVICE=cpu); SUITE_ONLY=1 runs steps 3 and 4 alone.
set -uo pipefail
RESULTS=${RESULTS:-/tmp/gpu_check}; SCALE=${SCALE:-1}; DEVICE=${DEVICE:-cuda}; WORKERS=${WORKERS:-14}
PY=${PYTHON:-python3}
mkdir -p "$RESULTS"; export PYTHONUNBUFFERED=1
work=$(mktemp -d)
log() { echo "== $(date +%T) $*"; }

log machine
nvidia-smi -L 2>/dev/null; nproc; $PY -c "import torch, torchvision; print(torch.__version__, torchvision.__version__, torch.cuda.is_available())"

if [ "${SUITE_ONLY:-0}" != 1 ]; then
log "1. CPU vs $DEVICE on one category"
$PY tools/make_synthetic.py --root "$work/syn" --category washer --n-train 60 --n-test-good 10 --n-test-defect 20
for d in cpu $DEVICE; do
  $PY train.py --dataset mvtecad --dataroot "$work/syn" --category washer --model resnet18 --weights random \
    --device $d --experiment "$work/e_$d" --workers 4 | tail -1
done
log "2. torchrun, one process on $DEVICE"
$PY -m torch.distributed.run --standalone --nproc_per_node 1 train.py --dataset mvtecad --dataroot "$work/syn" \
  --category washer --model resnet18 --weights random --device $DEVICE --experiment "$work/e_ddp" --workers 4 | tail -1
$PY - "$work" "$DEVICE" <<'PY' | tee "$RESULTS/compare.txt"
import json, sys, torch
sys.path.insert(0, ".")
from models import SemiOrthogonal
work, device = sys.argv[1], sys.argv[2]
runs = {name: f"{work}/e_{name}/mvtecad/washer" for name in ("cpu", device, "ddp")}
metrics = {name: json.load(open(f"{path}/metrics.json"))["metrics"] for name, path in runs.items()}
models = {name: SemiOrthogonal.load(f"{path}/model.pt") for name, path in runs.items()}
for other in (device, "ddp"):
    delta = {m: round(metrics[other][m] - metrics["cpu"][m], 6) for m in metrics["cpu"]}
    mu = (models[other].mu - models["cpu"].mu).abs().max().item() / models["cpu"].mu.abs().max().item()
    L = (models[other].L_packed - models["cpu"].L_packed).abs().max().item() / models["cpu"].L_packed.abs().max().item()
    print(f"{other} - cpu: metrics {delta}; max relative difference mu {mu:.2e}, L {L:.2e}")
PY
fi
log "3. MVTec-shaped suite, wide_resnet50_2 k=300 on $DEVICE"
$PY tools/benchmark.py --suite mvtec --suite-scale "$SCALE" --root "$work/suite" --device $DEVICE \
  --model wide_resnet50_2 --k 300 --workers "$WORKERS" --json "$RESULTS/suite.json"
log "4. the suite with --cache: cold, then warm"
$PY tools/benchmark.py --suite mvtec --suite-scale "$SCALE" --root "$work/suite" --device $DEVICE \
  --model wide_resnet50_2 --k 300 --workers "$WORKERS" --suite-cache --json "$RESULTS/suite_cache.json"
log done
rm -rf "$work"
