#!/usr/bin/env bash
# Installs the Python reference implementations (PyTorch, diffusers, k-diffusion, transformers,
# open_clip) into `.venv/` at the repository root. Used only by tests and benchmarks that compare
# danlu with them; danlu itself never runs Python.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/pip install --quiet --disable-pip-version-check -r scripts/reference/requirements.txt
.venv/bin/python -c "import torch, diffusers, k_diffusion, transformers, open_clip; print('reference env: torch', torch.__version__)"
