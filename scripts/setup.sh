#!/usr/bin/env bash
# Set up midilm on a fresh Debian machine: system packages, a virtual environment in .venv, the package.
#
#   ./scripts/setup.sh        the main job only (`midilm generate ... --png` on the default transformers backend):
#                             python3-venv and a C compiler, then torch (CPU), transformers, safetensors and
#                             matplotlib (the `generate` extra). A few minutes.
#   ./scripts/setup.sh --all  everything the tests use: also FluidSynth with its soundfont, abcmidi, WordNet,
#                             Chromium (browser test), g++ and cmake, every extra (training, evaluation, server,
#                             dev tools) and llama-cpp-python, which compiles llama.cpp (several minutes the first
#                             time; MIDILM_LLAMACPP=0 skips it).
#
# MIDILM_EXTRAS overrides the extras installed (e.g. MIDILM_EXTRAS=dev). Safe to run again: it skips what is
# done, and a plain run after `--all` removes nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=main
for arg in "$@"; do
  case "$arg" in
    --all) MODE=all ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "setup.sh: unknown option '$arg' (use --all for everything the tests need)" >&2; exit 2 ;;
  esac
done

APT_PACKAGES=(gcc python3-dev python3-venv)  # the venv, and the optional C MIDI scanner
if [ "$MODE" = all ]; then
  EXTRAS="${MIDILM_EXTRAS:-all}"
  APT_PACKAGES+=(fluidsynth timgm6mb-soundfont abcmidi wordnet-base wordnet-sense-index chromium g++ cmake)
else
  EXTRAS="${MIDILM_EXTRAS:-generate}"
fi

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
# the llama.cpp backend (its tests run it; the main job does not): llama-cpp-python compiles llama.cpp, a few
# minutes the first time (pip keeps the wheel); its multimodal library is not needed
if [ "$MODE" = all ] && [ "${MIDILM_LLAMACPP:-1}" != 0 ]; then
  CMAKE_ARGS="${CMAKE_ARGS:--DLLAVA_BUILD=OFF}" CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" \
    .venv/bin/python -m pip install -q -e ".[llamacpp]"
fi
