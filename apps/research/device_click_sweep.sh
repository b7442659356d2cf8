#!/usr/bin/env bash
# One trip to the accelerator machine (the `device` tool): four click-model trainings side by side on one GPU,
# each for MINUTES minutes, every log and model brought back under $OUT. Prepare here first:
#   python -m apps.research.resized_copy ../shared/data/isic .gpu/isic       # 2,107 pairs at 256 px, 51 MB
#   pip download --no-deps -d .gpu/whl monai==1.6.1 pytorch-msssim==1.0.0    # what that machine lacks
# then run it there with carry [".gpu"] and timeout_s about 60 s above MINUTES * 60:
#   bash apps/research/device_click_sweep.sh
# Choose among the runs by their best selection-split "iou" in <name>.jsonl (never by validation), then
# evaluate the chosen file here with lesion-evaluate-clicks and ship it only if it beats the shipped one.
set -euo pipefail
MINUTES=${MINUTES:-7}
OUT=${OUT:-runs/device}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu/whl/*.whl
export PYTHONPATH="/tmp/site:$PWD"
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
train() {  # name, then lesion-train options
    local name=$1
    shift
    python3 -m apps.train .gpu/isic --clicks --click-prev-mask --device cuda --workers 3 --batch-size 16 \
        --minutes "$MINUTES" --epochs 1000 --progress --out "$OUT/$name.pt" --log "$OUT/$name.jsonl" "$@" \
        >"$OUT/$name.log" 2>&1 &
}
train unet_s6 --init lesion_app/model/pretrained_unet.pt --click-sigma 6 --lr 1e-3
train deeplabv3_s6 --init lesion_app/model/pretrained_deeplabv3.pt --click-sigma 6 --lr 1e-3
train deeplabv3_s10 --init lesion_app/model/pretrained_deeplabv3.pt --click-sigma 10 --lr 1e-3
train deeplabv3_s6_lr2 --init lesion_app/model/pretrained_deeplabv3.pt --click-sigma 6 --lr 2e-3
status=0
for job in $(jobs -p); do wait "$job" || status=1; done
for log in "$OUT"/*.jsonl; do
    python3 -c "import json,sys; rows=[json.loads(l) for l in open(sys.argv[1])]; best=max(rows,key=lambda r:r['val']['iou']); print(sys.argv[1], len(rows), 'epochs, best selection iou', round(best['val']['iou'],4), 'at', best['epoch'])" "$log"
done | tee "$OUT/summary.txt"
exit $status
