#!/usr/bin/env bash
# The GPU path in one script (issue #16, item 5): at most about 10 minutes on one GPU. Writes everything under OUT:
#   nvidia-smi.txt      the GPU and driver (or why there is none)
#   pytest_gpu.txt      the tests marked `gpu` (they skip without CUDA)
#   timings.json        DataDAM / trajectory matching / evaluator seconds on cpu and cuda, side by side
#   full_datadam_ipc10.json   DataDAM IPC 10 at the paper's 8000 iterations (capped by FULL_SECONDS) + evaluation
#   summary.json, gpu_check.log
# Without CUDA every CUDA part is skipped with its reason and the script still exits 0, so its logic is tested on
# the CPU (tests/test_gpu_check.py).
#
# Usage: bash scripts/gpu_check.sh [OUT]      (default OUT: runs/gpu_check-<UTC time>)
#   DATA=../shared/data/cifar10-jpg.tar.gz   the CIFAR-10 mirror for the full run (absent: the full run is skipped)
#   FULL_SECONDS=150  wall-time cap of the full run's distillation     PYTHON=python   the interpreter
#   QUICK=1           tiny budgets everywhere (the CPU test of this script)
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-runs/gpu_check-$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$out"
if [ -n "${PYTHON:-}" ]; then py="$PYTHON"; elif [ -x .venv/bin/python ]; then py=.venv/bin/python; else py=python3; fi
data="${DATA:-../shared/data/cifar10-jpg.tar.gz}"
log="$out/gpu_check.log"
say() { echo "[gpu_check $(date -u +%T)] $*" | tee -a "$log" >&2; }

if [ "${QUICK:-0}" = 1 ]; then
  timing_args=(--iters 1 --warmup 0 --per-class 12 --eval-epochs 1 --eval-models 2 --mtt-syn-steps 2
               --mtt-batch-syn 10)
  full_args=(--full-iterations 2 --full-seconds 5 --full-eval-models 1 --full-eval-epochs 1)
  pytest_target=(tests/test_gpu.py)
else
  timing_args=()
  full_args=(--full-seconds "${FULL_SECONDS:-150}")
  pytest_target=(tests)
fi

say "out: $out, python: $py"
{ nvidia-smi 2>&1 || echo "nvidia-smi: not available"; } > "$out/nvidia-smi.txt"
"$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" 2>&1 | tee -a "$log"

say "1/3 tests marked gpu"
timeout 150 "$py" -m pytest -q -rs -m gpu "${pytest_target[@]}" > "$out/pytest_gpu.txt" 2>&1
echo "pytest -m gpu exit status: $?" >> "$out/pytest_gpu.txt"
tail -2 "$out/pytest_gpu.txt" | tee -a "$log"

say "2/3 timings on cpu and cuda"
timeout 200 "$py" benchmarks/gpu_check.py --out "$out" --parts timings "${timing_args[@]}" >> "$log" 2>&1 \
  || say "timings: exit status $?"

say "3/3 DataDAM IPC 10 at the paper's budget (capped), with its evaluation"
if [ -e "$data" ]; then
  timeout 300 "$py" benchmarks/gpu_check.py --out "$out" --parts full --data "$data" "${full_args[@]}" >> "$log" 2>&1 \
    || say "full run: exit status $?"
else
  timeout 60 "$py" benchmarks/gpu_check.py --out "$out" --parts full >> "$log" 2>&1
  say "full run skipped: no data at $data"
fi
say "done: $(ls "$out" | tr '\n' ' ')"
exit 0
