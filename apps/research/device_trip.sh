#!/usr/bin/env bash
# The one trip to the accelerator machine (the `device` tool, about 15 minutes of GPU time in all): every training
# the open accuracy work needs, side by side on one GPU for MINUTES minutes each, each choosing its best epoch on the
# selection split carved from ISIC's training part (never on the reported validation split), every model file and
# log brought back under $OUT.
#
#   automatic models, the paper's Tables I/II retrained so that they can be reported honestly (and on a budget
#   at least as long as the shipped ones had): unet, unet_noatt, deeplabv3, deeplabv3_noatt, from scratch;
#   click models (DeepEdit-style, built on the U-Net because f-BRS refines the U-Net): deepedit_s6 and
#   deepedit_s10 (guidance Gaussians of 6 and 10 px) from the shipped unet, with the previous mask as input.
#
# Prepare here first (both under .gpu/, which git ignores; the copy keeps the data set's licence):
#   python -m apps.research.resized_copy ../shared/data/isic .gpu/isic       # 2,107 pairs at 256 px, 51 MB
#   pip download --no-deps -d .gpu/whl monai==1.6.1 pytorch-msssim==1.0.0    # what that machine lacks
# then run it there with carry [".gpu"] and timeout_s about 90 s above MINUTES * 60:
#   bash apps/research/device_trip.sh
# Back here, with the files under runs/device/ (choose by the selection split, report once):
#   lesion-evaluate ../shared/data/isic --split val runs/device/{unet,unet_noatt,deeplabv3,deeplabv3_noatt}.pt \
#       lesion_app/model/pretrained_{unet,deeplabv3}.pt --options plain post --compare unet unet_noatt \
#       --compare deeplabv3 deeplabv3_noatt --compare unet pretrained_unet --compare deeplabv3 pretrained_deeplabv3
#   lesion-evaluate ../shared/data/ph2 --split all ...          # the same models and options
#   lesion-evaluate-clicks ../shared/data/isic --split selection --limit 60 --model runs/device/deepedit_s6.pt
#       (and deepedit_s10, and the shipped lesion_app/model/pretrained_deepedit.pt: choose by NoC@90 there)
# and replace a shipped file only where the paired interval against it lies above zero.
#
# Settings (environment): MINUTES (9), OUT (runs/device), DATA (.gpu/isic), WHEELS (.gpu/whl; absent: nothing
# installed), DEVICE (cuda), WORKERS (2 data-loading processes per run), EPOCHS (1000: the minutes decide),
# SIZE (256), LIMIT (0: every pair; smoke tests), ONLY (names of the runs to start, space-separated; empty: all),
# THREADS (2 torch CPU threads per run; the CPU smoke test uses 1: six runs on 2 cores).
# Exit status: 0 when every run started wrote its model file.
set -euo pipefail
MINUTES=${MINUTES:-9}
OUT=${OUT:-runs/device}
DATA=${DATA:-.gpu/isic}
WHEELS=${WHEELS:-.gpu/whl}
DEVICE=${DEVICE:-cuda}
WORKERS=${WORKERS:-2}
EPOCHS=${EPOCHS:-1000}
SIZE=${SIZE:-256}
LIMIT=${LIMIT:-0}
PYTHON=${PYTHON:-python3}
ONLY=${ONLY:-}
THREADS=${THREADS:-2}
mkdir -p "$OUT"
if compgen -G "$WHEELS/*.whl" >/dev/null; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$WHEELS"/*.whl
    export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
fi

names=()
train() {  # name, then lesion-train options
    local name=$1
    shift
    if [[ -n "$ONLY" && " $ONLY " != *" $name "* ]]; then return; fi
    names+=("$name")
    "$PYTHON" -m apps.train "$DATA" --device "$DEVICE" --workers "$WORKERS" --threads "$THREADS" --batch-size 16 \
        --minutes "$MINUTES" --epochs "$EPOCHS" --spatial-size "$SIZE" --limit "$LIMIT" --progress \
        --out "$OUT/$name.pt" --log "$OUT/$name.jsonl" "$@" >"$OUT/$name.log" 2>&1 &
}
train unet --arch unet --lr 2e-3
train unet_noatt --arch unet --no-attention --lr 2e-3
train deeplabv3 --arch deeplabv3 --lr 2e-3
train deeplabv3_noatt --arch deeplabv3 --no-attention --lr 2e-3
clicks=(--clicks --click-prev-mask --init lesion_app/model/pretrained_unet.pt --lr 1e-3)
train deepedit_s6 "${clicks[@]}" --click-sigma 6
train deepedit_s10 "${clicks[@]}" --click-sigma 10

status=0
for job in $(jobs -p); do wait "$job" || status=1; done
shopt -s nullglob
for log in "$OUT"/*.jsonl; do
    "$PYTHON" - "$log" <<'EOF'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
best = max(rows, key=lambda r: r["val"]["iou"], default=None)
if best is None:
    print(f"{sys.argv[1]}: no epoch finished")
else:
    print(f"{sys.argv[1]}: {len(rows)} epochs, best selection-split IoU {best['val']['iou']:.4f} at epoch {best['epoch']}")
EOF
done | tee "$OUT/summary.txt"
for name in "${names[@]}"; do
    [[ -s "$OUT/$name.pt" ]] || { echo "no model file from $name: see $OUT/$name.log" | tee -a "$OUT/summary.txt"; status=1; }
done
exit $status
