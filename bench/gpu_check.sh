#!/usr/bin/env bash
# The checks a CUDA machine adds to CI's (CI has no GPU): the gpu-marked tests and the Triton kernels' tests
# (compiled there), then the benchmarks that run on the GPU (fused kernels and the face-count × image-size grid,
# render throughput and memory, a training step, voxelization), their logs and bench.json in OUT_DIR. Exits
# non-zero when a test fails or a part fails or runs past its time limit; the parts that finished still leave
# their files.
#
#   bench/gpu_check.sh [OUT_DIR]          (default gpu-check/; PY=python3 for a Python other than .venv's)
#
# The tests need torch with CUDA (its Linux wheels bring triton), lightning, torchmetrics, h5py, numba, rich and
# pytest; not wandb, jsonargparse, trimesh or optuna, so a GPU image with PyTorch runs it after
# `pip install --no-deps --no-build-isolation -e .`.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-gpu-check}
py=${PY:-.venv/bin/python}
limit=${GPU_CHECK_PART_S:-300}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 WANDB_MODE=offline
"$py" -c "import sys, torch
if not torch.cuda.is_available():
    sys.exit(f'gpu-check: torch {torch.__version__} sees no CUDA device')
print(torch.cuda.get_device_name(0), 'torch', torch.__version__)" 2>&1 | tee "$out/device.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || exit 1
timeout "$limit" "$py" -m pytest -p no:cacheprovider -p no:xdist -m "gpu or triton" -ra tests/test_cuda.py \
    tests/test_voxelize.py tests/test_triton.py \
    2>&1 | tee "$out/tests.log"
tests=${PIPESTATUS[0]}
timeout "$limit" "$py" -m bench --only fused render train_step voxelize --out "$out/bench.json" 2>&1 | tee "$out/bench.log"
bench=${PIPESTATUS[0]}
echo "gpu-check: tests exit $tests, bench exit $bench; files in $out/"
exit $(( tests != 0 || bench != 0 ))
