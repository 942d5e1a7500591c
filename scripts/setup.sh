#!/usr/bin/env bash
# Install what a fresh Debian/Ubuntu machine lacks and build eva_fast into ./.venv (idempotent).
#   system: FFmpeg dev libraries + CLI (libavformat/libavcodec/libavutil/libswscale), pkg-config,
#           cmake, the NVIDIA codec loader headers (libffmpeg-nvenc-dev, used by the CUDA build)
#   python: a virtual environment with a pinned CPU torch (unless torch is already importable,
#           e.g. a GPU machine's CUDA build: set EVA_FAST_VENV_SYSTEM_SITE=1 to reuse it), the
#           build tools, the test and benchmark dependencies, and eva_fast itself (editable).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
pkg-config --exists libavformat libavcodec libavutil libswscale 2>/dev/null ||
  need+=(libavformat-dev libavcodec-dev libavutil-dev libswscale-dev)
command -v pkg-config >/dev/null || need+=(pkg-config)
command -v ffmpeg >/dev/null || need+=(ffmpeg)
command -v cmake >/dev/null || need+=(cmake)
command -v g++ >/dev/null || need+=(g++)
[ -f /usr/include/ffnvcodec/dynlink_loader.h ] || need+=(libffmpeg-nvenc-dev)
if ((${#need[@]})); then
  echo "[setup] installing system packages: ${need[*]}"
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv"
  if [ "${EVA_FAST_VENV_SYSTEM_SITE:-0}" = 1 ]; then
    "$PY" -m venv --system-site-packages .venv
  else
    "$PY" -m venv .venv
  fi
fi
PIP=(.venv/bin/python -m pip install -q --disable-pip-version-check)
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  echo "[setup] installing torch==2.13.0 (CPU build)"
  "${PIP[@]}" "torch==2.13.0"
fi
echo "[setup] installing build, test and benchmark dependencies"
"${PIP[@]}" "scikit-build-core>=0.10" "pybind11>=2.12" numpy
"${PIP[@]}" -r scripts/requirements-dev.txt
echo "[setup] building eva_fast (C++ extension, FFmpeg $(pkg-config --modversion libavcodec))"
"${PIP[@]}" --no-build-isolation -e .
.venv/bin/python -c "import eva_fast, json; print('[setup] ok:', json.dumps(eva_fast.build_info()))"
