#!/usr/bin/env bash
# Create a bench peer's own Python environment (opt-in; never part of setup.sh or CI).
#
#   bash scripts/peer_env.sh torchcodec [DIR]
#
# A peer whose wheels cannot live beside the project's pinned CPU torch (torch==2.13.0 in .venv) gets
# a virtual environment of its own; `eva-fast bench` runs it in a worker process (bench/_peer_worker.py)
# and finds it at DIR (default: ${EVA_FAST_PEER_ENVS:-$HOME/.cache/eva_fast/peer_envs}/NAME), or at
# the path given with `--peer-env NAME=DIR/bin/python`.
#
#   torchcodec: torchcodec 0.17 (PyPI) with torch==2.14.1 + torchvision==0.29.1 (the PyPI torchcodec
#               0.17 wheel needs torch 2.14's libraries; ~5.5 GB with torch's CUDA runtime wheels,
#               which load on a CPU-only machine). It uses the system FFmpeg libraries at run time.
set -euo pipefail
cd "$(dirname "$0")/.."

name=${1:-}
case "$name" in
  torchcodec) pkgs=("torch==2.14.1" "torchvision==0.29.1" "torchcodec==0.17.*" "numpy") ;;
  *) echo "usage: bash scripts/peer_env.sh torchcodec [DIR]   (known peers: torchcodec)" >&2; exit 2 ;;
esac
dir=${2:-${EVA_FAST_PEER_ENVS:-$HOME/.cache/eva_fast/peer_envs}/$name}
PY=${PYTHON:-python3}

if [ ! -x "$dir/bin/python" ]; then
  echo "[peer_env] creating $dir ($("$PY" --version))"
  mkdir -p "$(dirname "$dir")"
  "$PY" -m venv "$dir"
fi
echo "[peer_env] installing ${pkgs[*]} into $dir (several GB; takes minutes)"
"$dir/bin/python" -m pip install -q --disable-pip-version-check "${pkgs[@]}"
# Check that the peer loads and decodes here, as the bench worker will.
"$dir/bin/python" - <<'PY'
import torch, torchvision, torchcodec
from torchcodec.decoders import VideoDecoder  # loads the native libraries (FFmpeg, torch)
print(f"[peer_env] ok: torchcodec {torchcodec.__version__}, torch {torch.__version__}, "
      f"torchvision {torchvision.__version__}")
PY
echo "[peer_env] use: .venv/bin/eva-fast bench   (found at the default location)  or"
echo "            .venv/bin/eva-fast bench --peer-env $name=$dir/bin/python"
