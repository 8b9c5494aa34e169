#!/usr/bin/env bash
# The GPU check of issue 5 as one command, for a machine with JAX + CUDA and no TensorFlow:
#   1. the environment (GPU, driver, JAX/jaxlib/Keras versions)          -> $OUT/env.txt
#   2. tools/bench.py under KERAS_BACKEND=jax: rasgan64 batch 24 in mixed_bfloat16 and float32
#      ($PRECISIONS), native and phase-form transposed convolutions, 1 and 10 steps per call ($SPC), with
#      a profile of each configuration's kernels                          -> $OUT/bench.jsonl, $OUT/bench.txt
#   3. a short real training run on the ModelNet10 chairs (64³), a few hundred steps
#                                                                         -> $OUT/train.txt, $OUT/losses.json
#   4. quality: --preset gpu-chair64 on the chairs for $QUALITY_SECONDS (SIGTERM saves it), then tools/evaluate.py
#      against the 99 test chairs (--metrics iou jsd; the floor beside them)
#                                                                         -> $OUT/quality_train.txt, $OUT/quality.json
#
# Prepare here (once): the Keras wheels the GPU machine lacks and the chairs, in git-ignored folders:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .whl keras==3.15.1 namex optree
#   mkdir -p .gpu_data && cp ../shared/data/voxels/modelnet10_chair_64_win.npz .gpu_data/
# then run it there (the device tool: carry [".whl", ".gpu_data"]):  bash benchmarks/gpu_check.sh
# QUICK=1 runs the same stages at toy size (16³, width 1/8, 2 epochs) to try the script on a CPU
# (there: QUICK=1 WHEELS=none PYTHON=python JAX_PLATFORMS=cpu OUT=/tmp/gcq bash benchmarks/gpu_check.sh).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_check_out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
WHEELS=${WHEELS:-.whl}   # WHEELS=none: use the Python's own packages
if compgen -G "$WHEELS/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl \
        || { echo "error: could not install the carried wheels" >&2; exit 2; }
    export PYTHONPATH=/tmp/site:$PWD
else
    export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
export KERAS_BACKEND=jax PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
DATA=${DATA:-.gpu_data/modelnet10_chair_64_win.npz}
if [ "${QUICK:-0}" = 1 ]; then
    SIZE=(--resolution 16 --width 0.125); BATCH=8; STEPS=(--steps 3 --warmup 1); EPOCHS=2; SPC=(1 4)
    DATA=synthetic:boxes:res=16:n=64; PRECISIONS=(float32 mixed_bfloat16)
else
    SIZE=(); BATCH=24; STEPS=(--steps 20 --warmup 3); EPOCHS=${EPOCHS:-8}; SPC=(${SPC:-1 10})
    PRECISIONS=(${PRECISIONS:-mixed_bfloat16 float32})
fi
STAGES=${STAGES:-env bench train quality}   # a device command has 10 minutes: e.g. STAGES="env bench", then STAGES="train quality"
QUALITY_SECONDS=${QUALITY_SECONDS:-240}
has() { [[ " $STAGES " == *" $1 "* ]]; }

has env && {
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null || echo "nvidia-smi: none"
    "$PY" -c "import sys, jax, jaxlib, keras; print('python', sys.version.split()[0]); print('jax', jax.__version__,
'jaxlib', jaxlib.__version__, 'keras', keras.__version__); print('devices', jax.devices())"
} 2>&1 | tee "$OUT/env.txt"

# 2. the bench (peak: H100 SXM dense bf16, 989 TFLOP/s; about 790 measured on these machines)
if has bench; then
"$PY" tools/bench.py --backend jax --arch rasgan64 "${SIZE[@]}" -b "$BATCH" --precision "${PRECISIONS[@]}" \
    --conv-transpose native phase --steps-per-call "${SPC[@]}" "${STEPS[@]}" --peak-tflops 989 \
    --profile /tmp/gpu_check_profiles --json >"$OUT/bench.jsonl" 2>"$OUT/bench_stderr.txt"
status=$?
"$PY" - "$OUT/bench.jsonl" <<'EOF' | tee "$OUT/bench.txt"
import json, sys
from tf3dgan.benchmark import TABLE_HEADER, format_row
from tf3dgan.profiling import format_kernels
rows = [json.loads(line) for line in open(sys.argv[1]) if line.startswith("{")]
print(format_row(TABLE_HEADER))
for r in rows:
    print(format_row(r))
for r in rows:
    if "kernels" in r.get("profile", {}):
        print(f"\n{format_row(r).split('  ')[0]}:\n{format_kernels(r['profile'])}")
EOF
tail -3 "$OUT/bench_stderr.txt"
[ $status = 0 ] || echo "bench failed (exit $status)"
fi

# 3. a short training run (the seed's flags) and its losses
if has train; then
RUN=/tmp/gpu_check_runs
rm -rf "$RUN"
"$PY" tools/train.py -n chair-gpu -d "$DATA" "${SIZE[@]}" -e "$EPOCHS" -b "$BATCH" -glr 0.0025 -dlr 0.00003 \
    -sample 1000 -graph 1000 -graph3d 1000 -save "$EPOCHS" --no-progress --out "$RUN" 2>&1 | tee "$OUT/train.txt"
"$PY" - "$RUN/chair-gpu" "$OUT/losses.json" <<'EOF'
import json, sys
from pathlib import Path
import numpy as np
run, out = Path(sys.argv[1]), sys.argv[2]
tracks = {k: np.load(run / "plots" / f"track_{k}.npy").tolist() for k in ("d_loss", "g_loss")}
json.dump(dict(tracks, config=json.loads((run / "config.json").read_text())), open(out, "w"))
d, g = (np.asarray(tracks[k]) for k in ("d_loss", "g_loss"))
print(f"{d.size} steps: d_loss first/last 20 mean {d[:20].mean():.4f} / {d[-20:].mean():.4f}, "
      f"g_loss {g[:20].mean():.4f} / {g[-20:].mean():.4f}, all finite: {bool(np.isfinite(d).all() and np.isfinite(g).all())}")
EOF
fi

# 4. the GPU recipe's quality after $QUALITY_SECONDS of training
has quality || exit 0
QRUN=/tmp/gpu_check_quality
rm -rf "$QRUN"
if [ "${QUICK:-0}" = 1 ]; then QDATA=synthetic:chairs:res=16:n=64; QREF=synthetic:chairs:res=16:n=32:seed=9
else QDATA="$DATA:train"; QREF="$DATA:test"; fi
timeout -s TERM "$QUALITY_SECONDS" "$PY" tools/train.py -n gpu-chair64 --preset gpu-chair64 -d "$QDATA" "${SIZE[@]}" \
    -e 100000 -sample 1000 -graph 1000 -graph3d 1000 -save 5 --no-progress --out "$QRUN" 2>&1 | tee "$OUT/quality_train.txt"
"$PY" tools/evaluate.py -n gpu-chair64 --out "$QRUN" --reference "$QREF" --metrics iou jsd --json -o "$OUT/quality.json" \
    2>&1 | tail -3 | tee -a "$OUT/quality_train.txt"
