#!/usr/bin/env bash
# On a lent GPU machine with no compiler: install the carried runtime wheel and
# this package, run the test suite on the cuda driver against carried
# artifacts (.device/artifacts, made by `lnbwd-iree compile --out`), then bench.
# Usage: scripts/device_run.sh [tests] [script] [direct] [fair] [torch] [ddp] [rms] [trace] [fair-rms] [probe] [gaps] [bench DTYPE...]
#   fair: the full LayerNorm bench (every peer, backward and forward) on the seven shapes,
#   one process per dtype, into $OUT/bench_cuda_{f32,bf16}.{json,md,png};
#   fair-rms: the same for RMSNorm, into $OUT/bench_rmsnorm_cuda_*.
set -uo pipefail
# A fresh site folder and artifact cache per call: a warm machine keeps /tmp
# between calls, and other checkouts install there too.
SITE=$(mktemp -d /tmp/lnbwd-site.XXXXXX)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" .whl/*.whl || exit 1
python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --target "$SITE" . || exit 1
export PYTHONPATH=$SITE PYTHONUNBUFFERED=1
export LNBWD_IREE_ARTIFACTS=$PWD/.device/artifacts LNBWD_IREE_CACHE=$SITE/cache
OUT=${OUT:-/tmp/out}
REPO=$PWD
# Run from elsewhere so the source tree does not shadow the installed package.
cd /tmp
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv
python3 -m lnbwd_iree info
for step in "$@"; do
  case "$step" in
    tests)
      LNBWD_IREE_TEST_DEVICES=cuda,local-task python3 -m pytest -q -rs -p no:cacheprovider "$REPO/tests" \
        -k "${TESTS_K:-cuda or test_reference or test_validation}" 2>&1 | tee "$OUT/pytest_cuda.log" | tail -25 ;;
    fair|fair-rms)
      # The Liger wheel in .whl was installed above; its torch and triton are the machine's.
      norm=layernorm prefix=bench_cuda
      [ "$step" = fair-rms ] && norm=rmsnorm prefix=bench_rmsnorm_cuda
      for dtype in ${FAIR_DTYPES:-f32 bf16}; do
        python3 -m lnbwd_iree bench --device cuda --norm "$norm" --op both --dtype "$dtype" \
          --shape 8192x4096 --shape 32768x1024 --shape 16384x8192 --shape 4096x16384 \
          --shape 65536x768 --shape 1024x512 --shape 4096x1024 --json "$OUT/${prefix}_$dtype.json" --force 2>&1 \
          | grep -vE "^lnbwd-iree: compiled" | tee -a "$OUT/$prefix.log"
      done ;;
    quick-f32|quick-bf16)
      python3 -m lnbwd_iree bench --device cuda --dtype "${step#quick-}" --impl iree_static --impl torch_eager \
        --shape 8192x4096 --shape 32768x1024 --shape 16384x8192 --shape 4096x16384 \
        --shape 65536x768 --shape 1024x512 --shape 4096x1024 --json "/tmp/quick.json" --force | grep -E "iree|torch" ;;
    f32|bf16|f16)
      python3 -m lnbwd_iree bench --device cuda --dtype "$step" \
        --shape 8192x4096 --shape 32768x1024 --shape 16384x8192 --shape 4096x16384 \
        --shape 65536x768 --shape 1024x512 --shape 4096x1024 --json "$OUT/bench_cuda_$step.json" --force ;;
    torch)
      # lnbwd_iree.torch on CUDA tensors: parity tests, then scripts/bench_torch.py (module step against
      # eager, torch.compile and Liger; crossing costs; a Transformer block's training step).
      LNBWD_IREE_TEST_DEVICES=cuda python3 -m pytest -q -rs -p no:cacheprovider "$REPO/tests/test_torch.py" -k cuda 2>&1 \
        | tee "$OUT/pytest_torch_cuda.log" | tail -8
      python3 "$REPO/scripts/bench_torch.py" --device cuda --out "$OUT" ;;
    ddp)
      # scripts/ddp_train.py over NCCL, one process per GPU of this machine (world size 1 on one GPU).
      python3 -m torch.distributed.run --standalone --nproc_per_node="$(nvidia-smi -L | wc -l)" \
        "$REPO/scripts/ddp_train.py" --device cuda --json "$OUT/ddp_cuda.json" 2>&1 | tee "$OUT/ddp_cuda.log" | tail -6 ;;
    rms)
      # RMSNorm on CUDA: kernel and torch tests, then IREE's shape-specialised artifacts against torch eager on
      # the seven bench shapes, both ops. RMS_BASE (a folder of the carried tree holding another checkout's
      # package and, in RMS_BASE/artifacts, its compiled artifacts) times that checkout's backward too: a
      # before/after comparison in the same run. RMS_SHAPES (MxN ...) narrows the shapes, RMS_TESTS (a pytest -k
      # expression) the tests, RMS_OP (backward, forward, both) the bench.
      shapes=$(for s in ${RMS_SHAPES:-8192x4096 32768x1024 16384x8192 4096x16384 65536x768 1024x512 4096x1024}; do
        echo "--shape $s"; done)
      LNBWD_IREE_TEST_DEVICES=cuda python3 -m pytest -q -rs -p no:cacheprovider "$REPO/tests/test_rmsnorm.py" \
        "$REPO/tests/test_torch_rmsnorm.py" -k "cuda${RMS_TESTS:+ and ($RMS_TESTS)}" 2>&1 | tee "$OUT/pytest_rms_cuda.log" | tail -12
      python3 -m lnbwd_iree bench --device cuda --norm rmsnorm --op "${RMS_OP:-both}" --dtype f32 --dtype bf16 --impl iree_static \
        --impl torch_eager $shapes --json "$OUT/bench_rms.json" --force 2>&1 \
        | grep -vE "^lnbwd-iree: compiled" | tee "$OUT/bench_rms.log"
      if [ -n "${RMS_BASE:-}" ]; then
        BASE_SITE=$(mktemp -d /tmp/lnbwd-base-site.XXXXXX)
        python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --target "$BASE_SITE" \
          "$REPO/$RMS_BASE" || exit 1
        PYTHONPATH=$BASE_SITE:$SITE LNBWD_IREE_ARTIFACTS=$REPO/$RMS_BASE/artifacts LNBWD_IREE_CACHE=$BASE_SITE/cache \
          python3 -m lnbwd_iree bench --device cuda --norm rmsnorm --op backward --dtype f32 --dtype bf16 \
          --impl iree_static $shapes --json "$OUT/bench_rms_base.json" --force 2>&1 | tee "$OUT/bench_rms_base.log"
      fi ;;
    flags)
      # Runtime flag variants, IREE only (IREE_PY_RUNTIME_FLAGS is read when the driver is created).
      # Stream command buffers are the Python default; --cuda_use_streams=false builds a CUDA graph per call.
      for flags in "" "--cuda_use_streams=false"; do
        echo "== runtime flags: ${flags:-default}"
        for dtype in f32 bf16; do
          IREE_PY_RUNTIME_FLAGS="$flags" python3 -m lnbwd_iree bench --device cuda --dtype $dtype --op both --impl iree_static \
            --shape 8192x4096 --shape 32768x1024 --shape 4096x1024 --json "/tmp/flags.json" --force | grep iree_static
        done
      done ;;
    trace)
      # torch.profiler timeline of the module's training step (host pieces and GPU kernels).
      python3 "$REPO/scripts/probes/torch_step_trace.py" --shape 4096x1024 --shape 8192x4096 --dtype f32 --dtype bf16 2>&1 \
        | tee "$OUT/torch_step_trace.log" | grep -E "^==|back-to-back" ;;
    probe)
      # Backward variants built by scripts/probes/kernel_probe.py into .device/probe: checked, then timed interleaved.
      python3 "$REPO/scripts/probes/kernel_probe.py" run "$REPO/.device/probe" "$OUT/probe.json" 2>&1 | tee "$OUT/probe.log" | grep -v "^  " ;;
    gaps)
      # GPU time per back-to-back call: kernels, idle inside a call, idle between calls. GAP_CASES: SHAPE:DTYPE ...
      python3 "$REPO/scripts/probes/gpu_gaps.py" ${GAP_CASES:-8192x4096:bf16} 2>&1 | tee "$OUT/gpu_gaps.log" ;;
    script)
      # Any script of the carried tree, run with the installed package: SCRIPT=path (repo-relative).
      python3 "$REPO/$SCRIPT" 2>&1 | tee "$OUT/script.log" ;;
    direct)
      # lnbwd_iree.torch's direct launch path: checks, no-host-sync, CUDA graph, module step vs torch.
      python3 "$REPO/scripts/direct_probe.py" 2>&1 | tee "$OUT/direct_probe.log" ;;
    overhead)
      python3 "$REPO/scripts/probes/call_overhead.py" 1024x512 4096x1024 8192x4096 ;;
    profile)
      # ncu per-dispatch times; PROFILE_CASES: space-separated SHAPE:DTYPE:NORM.
      for case in ${PROFILE_CASES:-8192x4096:f32:layernorm}; do
        IFS=: read -r shape dtype norm <<< "$case"
        echo "== $shape $dtype $norm" | tee -a "$OUT/ncu.log"
        ncu --metrics gpu__time_duration.sum --clock-control none python3 "$REPO/scripts/probes/profile_dispatches.py" "$shape" "$dtype" "$norm" 2>&1 \
          | grep -E "dispatch|gpu__time_duration" | tee -a "$OUT/ncu.log" | tail -40
      done ;;
  esac
done
