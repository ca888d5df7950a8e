#!/usr/bin/env bash
# The prepared command of a GPU session (one device call of at most 10 minutes): continues the bundled model
# from its current weights for about 8-9 minutes, scores it before and after on held-out synthetic pairs and
# on the full Motorcycle pair (bad-2, EPE, SGBM alongside), and keeps it only when it is better on both.
# Everything lands in $OUT: session.json (the record), session.log, console.log, metrics.jsonl (loss curve),
# config.yaml and, when kept, the weights in two shards (default.part0/1.safetensors, 12 MB each).
#   OUT=gpu_out bash scripts/gpu_session.sh [DEADLINE_SECONDS [SESSION_ARGS...]]   # default 540: the whole session
# Then, here: python -m madis_stereo.app.session adopt FETCHED_OUT   (weights into the package, record appended)
# A second call on the same warm machine continues from the weights the first one kept (/tmp/madis_session).
set -u
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src" PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
PY=${PYTHON:-$(command -v python3 || command -v python)}
DEADLINE=${1:-540}
shift $(($# > 0 ? 1 : 0))  # the rest: more `session run` arguments (the CPU test passes a tiny recipe)
{ nvidia-smi -L; "$PY" -c "import torch; print('torch', torch.__version__)"; } > "$OUT/console.log" 2>&1
timeout $((DEADLINE + 30)) "$PY" -m madis_stereo.app.session run --out "$OUT" --deadline-s "$DEADLINE" "$@" \
    >> "$OUT/console.log" 2>&1
status=$?
echo "session exit $status" >> "$OUT/console.log"
exit $status
