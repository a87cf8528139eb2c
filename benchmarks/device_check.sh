#!/usr/bin/env bash
# The one prepared script for a CUDA machine (issue 6's GPU figures), run from the repo root:
#   bash benchmarks/device_check.sh            # logs and JSON lines under $OUT (or device-out/)
# It needs a python with torch + CUDA. Packages that machine lacks can travel as wheels in .whl/
# (see README "Benchmarks"): installed to /tmp/site when the python lacks them. Steps, ~8 min on an H100:
#   1. the GPU tests (batched augmentation on CUDA equals the CPU reference; training steps of
#      every architecture, fresh and resumed, never wait for the host);
#   2. python -m benchmarks.data_path (cached/batched data path incl. the CUDA batch path);
#   3. python -m benchmarks.gpu (paper setting vs fast path, packing 1/2/4, TFLOP/s, per_arch
#      shares).
# Their figures also go, under one run id, to $CAMSWEEP_BENCH_RESULTS (default
# $OUT/results.jsonl, beside the logs), which `python -m benchmarks.report --results` reads.
set -uo pipefail
out=${OUT:-device-out}
mkdir -p "$out"
python=${PYTHON:-python3}
if ! "$python" -c "import segmentation_models_pytorch, albumentations, pydantic" 2>/dev/null; then
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 WANDB_MODE=disabled
export CAMSWEEP_BENCH_RESULTS=${CAMSWEEP_BENCH_RESULTS:-$out/results.jsonl}
export CAMSWEEP_BENCH_RUN_ID=${CAMSWEEP_BENCH_RUN_ID:-device-$(date -u +%Y%m%dT%H%M%SZ)}
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version \
    --format=csv | tee "$out/device.txt"
"$python" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" \
    | tee -a "$out/device.txt"
status=0
"$python" -m pytest -q -p no:cacheprovider -m gpu tests/test_batch_augment.py tests/test_trial.py 2>&1 \
    | tee "$out/pytest-gpu.log" || status=1
"$python" -m benchmarks.data_path --frames 4 2>&1 | tee "$out/data_path.jsonl" || status=1
"$python" -m benchmarks.gpu --seconds "${BENCH_SECONDS:-6}" 2>&1 | tee "$out/gpu.jsonl" || status=1
exit $status
