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
T0=$(date +%s.%N)  # the deadline counts from here (the device's call limit does too)
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src" PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
PY=${PYTHON:-$(command -v python3 || command -v python)}
DEADLINE=${1:-540}
shift $(($# > 0 ? 1 : 0))  # the rest: more `session run` arguments (the CPU test passes a tiny recipe)
{ nvidia-smi -L; "$PY" -c "import torch; print('torch', torch.__version__)"; } > "$OUT/console.log" 2>&1
# training runs in a watched child process (a CUDA fatal error, an OOM or a hang falls back to the CPU renderer);
# the whole session is killed 20 s past its deadline, and session.json then still says how far it got
timeout -k 5 $((${DEADLINE%.*} + 20)) "$PY" -m madis_stereo.app.session run --out "$OUT" --deadline-s "$DEADLINE" \
    --started-at "$T0" "$@" >> "$OUT/console.log" 2>&1
status=$?
echo "session exit $status" >> "$OUT/console.log"
if [ ! -s "$OUT/session.json" ]; then  # the session died before writing any record (e.g. at import)
    printf '{"id": "failed-%s", "status": "failed", "kept": false, "error": "session exit %s before any record; see console.log"}\n' \
        "$(date -u +%Y%m%dT%H%M%SZ)" "$status" > "$OUT/session.json"
fi
{ echo "--- the session's decisions"; grep "madis_stereo.app.session" "$OUT/console.log" | tail -n 40
  echo "--- console.log tail"; tail -n 20 "$OUT/console.log"; }  # the device call returns this output's tail
exit $status
