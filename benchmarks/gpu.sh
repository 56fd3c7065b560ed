#!/usr/bin/env bash
# The device machine's one prepared script (issue 15.5): the `gpu` test tier, then
# benchmarks/gpu_bench.py (training images/s per seed model fp32/tf32/bf16, digits accuracy
# after one epoch fp32 vs bf16), in <= 8 minutes; a summary in $OUT/summary.md.
#
#   OUT=/some/dir bash benchmarks/gpu.sh        # on the GPU machine (the `run` tool sets OUT)
#   DRY=1 OUT=/tmp/x bash benchmarks/gpu.sh     # on a CPU: the same steps, tiny, no GPU needed
#
# Installs nothing (the machine has no network): it uses $PY, else .venv/bin/python, else
# python3, and stops with one clear line when torch or the project's dependencies are not
# importable. Exit status: 0 all ran and passed, 1 a step failed (see the summary),
# 3 no usable Python/torch, 4 no CUDA GPU (and not DRY).
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/sepconc-gpu-out}
DRY=${DRY:-0}
mkdir -p "$OUT"
SUMMARY="$OUT/summary.md"
if [ -z "${PY:-}" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
say() { echo "$*" | tee -a "$SUMMARY"; }
: > "$SUMMARY"
say "# sepconc GPU run $(date -u +%Y-%m-%dT%H:%M:%SZ) (DRY=$DRY, python: $PY)"

if ! "$PY" -c 'import torch' 2>/dev/null; then
  say "gpu.sh: STOP: 'import torch' fails with $PY; carry a virtualenv (.venv) or use a machine with torch installed (this script installs nothing)"
  exit 3
fi
if ! missing=$("$PY" -c 'import kymatio, rich, mlflow, filelock, sklearn, sepconc' 2>&1); then
  say "gpu.sh: STOP: the project's dependencies are not importable with $PY: $(echo "$missing" | tail -1)"
  exit 3
fi
"$PY" - <<'EOF' | tee -a "$SUMMARY"
import torch
cuda = torch.cuda.is_available()
name = torch.cuda.get_device_name(0) if cuda else "none"
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, GPUs {torch.cuda.device_count()}: {name}")
EOF
if [ "$DRY" != 1 ] && ! "$PY" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())'; then
  say "gpu.sh: STOP: no CUDA GPU visible (torch.cuda.is_available() is False); DRY=1 checks the script on a CPU"
  exit 4
fi

status=0
say ""
say "## gpu test tier (tests/test_gpu_*.py, marker gpu)"
TIER_S=$([ "$DRY" = 1 ] && echo 120 || echo 200)
timeout "$TIER_S" "$PY" -m pytest -q -p no:cacheprovider -m gpu -rs \
  tests/test_gpu_kernels.py tests/test_gpu_models.py tests/test_gpu_precision.py \
  --junitxml "$OUT/gpu_tier.xml" > "$OUT/gpu_tier.log" 2>&1
rc=$?
tail -n 25 "$OUT/gpu_tier.log" | grep -E "passed|failed|skipped|error|FAILED|ERROR" | tail -n 12 | tee -a "$SUMMARY"
[ $rc = 124 ] && say "gpu tier: TIMED OUT after ${TIER_S} s"
[ $rc != 0 ] && [ $rc != 5 ] && status=1

say ""
say "## benchmarks/gpu_bench.py"
BENCH_S=$([ "$DRY" = 1 ] && echo 300 || echo 260)
DRYFLAG=$([ "$DRY" = 1 ] && echo --dry || true)
timeout "$BENCH_S" "$PY" benchmarks/gpu_bench.py --out "$OUT" $DRYFLAG > "$OUT/gpu_bench.log" 2>&1
rc=$?
if [ -f "$OUT/gpu_bench.md" ]; then tee -a "$SUMMARY" < "$OUT/gpu_bench.md"; fi
if [ $rc != 0 ]; then
  say "gpu_bench.py: exit $rc$([ $rc = 124 ] && echo " (timed out after ${BENCH_S} s)"); last lines:"
  tail -n 8 "$OUT/gpu_bench.log" | tee -a "$SUMMARY"
  status=1
fi
say ""
say "gpu.sh: done, status $status"
exit $status
