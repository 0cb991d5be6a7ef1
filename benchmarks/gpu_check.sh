#!/usr/bin/env bash
# The CUDA path in one go (docs/speed.md, "On a GPU"):
#   1. install the project into the Python that holds a CUDA build of torch;
#   2. benchmarks/speed.py on CUDA, alone on the machine (its figures are timings);
#   3. the test suite with CUDA visible (tests that take a device run on the CPU and on CUDA);
#   4. the Omniglot 5-way benchmark at ten times the CPU preset's training images.
#
#   bash benchmarks/gpu_check.sh DATA_ROOT [LOG_DIR]
#
# DATA_ROOT holds omniglot/ (the benchmark; the tests that read mnist/ and cifar10-subset/ skip
# when those are absent). Logs go to LOG_DIR (default gpu-check/); the results to
# results/omniglot-5w10s-gpu.{json,csv,md,png}. PYTHON names the interpreter (default python3),
# TASKS the benchmark's test tasks (default 20); SPEED=0, TESTS=0 or BENCHMARK=0 skips a stage.
# On an H200 (docs/speed.md) speed.py took 77 s and the tests 80 s on 8 workers; the benchmark
# pretrained in 135 s and meta-trained in 99 s, and its 20 tasks had not finished 3 minutes later.
set -uo pipefail
cd "$(dirname "$0")/.."
data=$(realpath "${1:?usage: bash benchmarks/gpu_check.sh DATA_ROOT [LOG_DIR]}")
logs=${2:-gpu-check}
py=${PYTHON:-python3}
mkdir -p "$logs"
export PYTHONUNBUFFERED=1 MTGAN_SHARED_DATA=$data

# 1. As the README installs it; a machine without a package index keeps the packages it has.
if ! "$py" -m pip install -q -e ".[test]" >"$logs/install.log" 2>&1; then
  echo "gpu_check: no package index; installing without dependencies" | tee -a "$logs/install.log"
  "$py" -m pip install -q --no-deps --no-build-isolation -e . >>"$logs/install.log" 2>&1 ||
    export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}
fi
"$py" - <<'EOF' || exit 1
import torch
assert torch.cuda.is_available(), "gpu_check: CUDA is not available to this Python"
print(f"gpu_check: torch {torch.__version__} on {torch.cuda.get_device_name()}")
EOF

# 2. Speed figures, with nothing else running.
if [ "${SPEED:-1}" != 0 ]; then
  start=$SECONDS
  "$py" benchmarks/speed.py --device cuda --json >"$logs/speed.txt" 2>&1
  echo "gpu_check: speed.py exit $? in $((SECONDS - start)) s"
fi

# 3. The test suite, spread over the CPU cores when pytest-xdist is there.
if [ "${TESTS:-1}" != 0 ]; then
  workers=()
  "$py" -c "import xdist" 2>/dev/null && workers=(-n 8)
  "$py" -m pytest "${workers[@]}" -p no:cacheprovider >"$logs/tests.log" 2>&1
  echo "gpu_check: tests exit $?; $(tail -n 1 "$logs/tests.log")"
fi

# 4. Ten times the images of the CPU preset (configs/omniglot-5w10s.yaml): the batch of each
# pretraining step and the meta-batch of each outer step, the step counts unchanged. Alone on
# the machine: its steps are bound by launching kernels from one CPU core, and 12 test workers
# beside it slowed pretraining from 135 s (8 workers, for its first minute) to 229 s.
if [ "${BENCHMARK:-1}" != 0 ]; then
  start=$SECONDS
  "$py" -m mtgan benchmark --config configs/omniglot-5w10s.yaml --device cuda \
    --tasks "${TASKS:-20}" --methods mtgan,frozen,finetune-augmented \
    --set data.root="$data/omniglot" --set pretrain.batch_size=640 --set meta.meta_batch=40 \
    --out results/omniglot-5w10s-gpu --overwrite --reuse-pretraining >"$logs/benchmark.log" 2>&1
  echo "gpu_check: benchmark exit $? in $((SECONDS - start)) s"
fi
