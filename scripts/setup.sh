#!/usr/bin/env bash
# Set up midilm on a fresh Debian machine: system packages, a virtual environment in .venv, and the
# package with its extras (default: all that install here). Safe to run again: it skips what is done.
set -euo pipefail
cd "$(dirname "$0")/.."

EXTRAS="${MIDILM_EXTRAS:-all}"
APT_PACKAGES=(gcc python3-dev python3-venv fluidsynth timgm6mb-soundfont abcmidi wordnet-base wordnet-sense-index chromium g++ cmake)

if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  missing=()
  for pkg in "${APT_PACKAGES[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip 2>/dev/null || true
# torch first and pinned: any other request pulls several GB of CUDA packages
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[${EXTRAS}]"
# the llama.cpp backend (its tests run it): llama-cpp-python compiles llama.cpp, a few minutes the first time
# (pip keeps the wheel); its multimodal library is not needed. MIDILM_LLAMACPP=0 skips it.
if [ "${MIDILM_LLAMACPP:-1}" != 0 ]; then
  CMAKE_ARGS="${CMAKE_ARGS:--DLLAVA_BUILD=OFF}" CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" \
    .venv/bin/python -m pip install -q -e ".[llamacpp]"
fi
