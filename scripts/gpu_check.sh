#!/usr/bin/env bash
# The CUDA path on a GPU machine, in a few minutes: the CUDA tests, then the GPU benchmarks
# (forward times fp32 / fp16 / bf16, a training step, the node end to end with every output).
#   scripts/gpu_check.sh [VENV]        (default .venv; `make setup` makes it)
# Prints the figures; exits non-zero when a CUDA test fails. Needs a CUDA build of torch
# (pip install torch==2.13.0 with the CUDA wheel) and, for the ONNX Runtime / TensorRT tests,
# onnxruntime-gpu; what is missing is skipped and says so.
set -uo pipefail
VENV=${1:-.venv}
PY="$VENV/bin/python"
cd "$(dirname "$0")/.."
"$PY" - <<'PYEOF' || exit 2
import torch
assert torch.cuda.is_available(), f'torch {torch.__version__} sees no CUDA device'
print(f'torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}')
PYEOF
status=0
echo "== CUDA tests"
"$PY" -m pytest -q -rs test/test_cuda.py test/test_inference.py test/test_inference_backends.py || status=1
echo "== forward pass (default and gpu_large presets), fp32 / fp16 / bf16"
timeout 300 "$PY" benchmarks/bench_model.py --device cuda --iters 50 || status=1
timeout 300 "$PY" benchmarks/bench_model.py --device cuda --preset gpu_large --batch 4 --iters 30 || status=1
echo "== training step"
timeout 300 "$PY" benchmarks/bench_training.py --device cuda --steps 10 || status=1
echo "== node end to end, 1920x1208, every output subscribed"
backends=$("$PY" -c "import onnxruntime as o; print('torch onnxruntime' if 'CUDAExecutionProvider' in o.get_available_providers() else 'torch')" 2>/dev/null || echo torch)
timeout 400 "$PY" benchmarks/bench_node_latency.py --device cuda --backends $backends --seconds 15 || status=1
exit $status
