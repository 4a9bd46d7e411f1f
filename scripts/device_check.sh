#!/usr/bin/env bash
# The GPU checks of issue 5 in one device call (the device tool: one short, prepared script).
#
# Here, once:   make device-wheels        (diffusers and av for the device image, which lacks them: .device/)
# There:        run(command="bash scripts/device_check.sh", carry=[".device"], timeout_s=590)
# A dry run of the same steps on this CPU:  DEVICE=cpu PYTHON=.venv/bin/python bash scripts/device_check.sh
#
# Steps (each prints where it is; results go to $OUT, which comes back):
#   1. the GPU, torch and diffusers versions;
#   2. the CLI end to end on CUDA: the bundled toy variant in bf16, plain and with --compile (a smoke run of the
#      CUDA path, with a wall-clock time);
#   3. benchmarks/bench_real_size.py: SVD-XT and Wan 2.2 TI2V-5B denoiser steps at real size, random weights,
#      bare vs GenProp, compile off and on (FAMILY="svd" or "wan" to run one; about 3-4 minutes each).
set -euo pipefail
DEVICE=${DEVICE:-cuda}
PYTHON=${PYTHON:-python3}
FAMILY=${FAMILY:-svd wan}
OUT=${OUT:-out/device}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if [ -d .device/wheels ] && ! "$PYTHON" -c "import diffusers, av" 2>/dev/null; then
  "$PYTHON" -m pip install --quiet --no-index --no-deps --target .device/site .device/wheels/*.whl
  export PYTHONPATH="$PWD/.device/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"

echo "== 1. versions"
if [ "$DEVICE" = cuda ]; then nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader; fi
"$PYTHON" -c "import torch, diffusers, av; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'diffusers', diffusers.__version__, 'av', av.__version__)"

echo "== 2. CLI on $DEVICE, toy variant, bf16, plain and --compile"
for extra in "" "--compile"; do
  start=$(date +%s%N)
  "$PYTHON" -m genprop_cli edit examples/clip.mp4 --first-frame examples/clip-edit.png --model toy --device "$DEVICE" \
    --dtype bf16 $extra -o "$OUT/toy-$DEVICE${extra:+-compile}.mp4" --overwrite --quiet
  echo "toy bf16 ${extra:-plain}: $(( ($(date +%s%N) - start) / 1000000 )) ms (process start and model load included)"
done

echo "== 3. real-size denoiser steps ($FAMILY)"
tiny=""
if [ "$DEVICE" = cpu ]; then tiny="--tiny"; fi
"$PYTHON" benchmarks/bench_real_size.py $tiny --device "$DEVICE" --family $FAMILY --json "$OUT/real_size.json" \
  2>&1 | grep -v -e "should be kept in float32" -e "CLIPImageProcessor" | tee "$OUT/real_size.txt"
