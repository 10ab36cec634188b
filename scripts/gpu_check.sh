#!/usr/bin/env bash
# The GPU check (docs/gpu.md): at most 8 minutes on one GPU, one JSON line on stdout, progress on stderr.
# No network, nothing installed: the repository's src/ goes on PYTHONPATH; the python used (PYTHON, else
# .venv/bin/python when it has CUDA, else python3) must have torch and transformers, and pytest for the tests.
set -u
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
  PYTHON=python3
  if [ -x .venv/bin/python ] && .venv/bin/python -c "import torch, sys; sys.exit(not torch.cuda.is_available())" \
      2>/dev/null; then
    PYTHON=.venv/bin/python
  fi
fi
exec timeout 480 "$PYTHON" scripts/gpu_check.py "$@"
