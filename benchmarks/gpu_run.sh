#!/usr/bin/env bash
# Run the CUDA check and the GPU benchmarks on a machine with an NVIDIA GPU and PyTorch.
# Usage: bash benchmarks/gpu_run.sh OUTDIR   (writes the JSON results and logs there)
set -uo pipefail
out=${1:-benchmarks/results}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD:${PYTHONPATH:-}" KERINCI_BENCH_WORK=/tmp/kx_bench
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$out/gpu.txt"
python3 benchmarks/cuda_check.py 2>&1 | tee "$out/cuda_check.log" | tail -1
python3 benchmarks/bench_train.py --device cuda --batch-size 32 --epochs 3 2>&1 | tee "$out/bench_train_cuda.log" | tail -6
python3 benchmarks/bench_predict.py --device cuda --size 8000 --cases raw scene_w1 big_w1 2>&1 | tee "$out/bench_predict_cuda.log" | tail -8
cp benchmarks/results/*cuda*.json "$out/" 2>/dev/null
