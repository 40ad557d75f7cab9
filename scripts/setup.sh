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
# minutes the first time. Flags: its multimodal library is not needed; on x86-64 -march=native minus AMX: GCC 12
# (Debian 12) drops the stores into AMX's tile config, so on a CPU with AMX (Sapphire Rapids and later) the AMX
# q8_0 matmul crashes (general protection fault) on any q8_0 GGUF, our default; AVX-512/VNNI stay on (AMX only
# speeds up prompt batches). Not pip's wheel cache: it keys the wheels it builds by the sdist alone, not CMAKE_ARGS,
# so it would reuse a wheel built with other flags (see llamacpp_build). A q8_0 smoke test then runs the shipped model in a subprocess
# (once per build: its libraries' hash is stamped in .venv); on a crash it rebuilds with portable flags (AVX2).
llamacpp_lib_hash() {
  .venv/bin/python - <<'EOF' 2>/dev/null
import hashlib, pathlib, llama_cpp
h = hashlib.sha256()
for f in sorted(pathlib.Path(llama_cpp.__file__).parent.glob("lib/*.so*")):
    h.update(f.name.encode() + f.read_bytes())
print(h.hexdigest())
EOF
}
llamacpp_q8_smoke() {  # exit status: 0 runs, 2 crashed on a signal, 1 another failure
  .venv/bin/python - <<'EOF'
import subprocess, sys, tempfile
from midilm.generate.load import default_model_path
from midilm.models.gguf import export_gguf
with tempfile.TemporaryDirectory() as tmp:
    path = export_gguf(default_model_path(), f"{tmp}/smoke-q8_0.gguf", "q8_0")
    run = ("import sys; from llama_cpp import Llama; m = Llama(sys.argv[1], n_ctx=64, n_threads=1, verbose=False); "
           "m.eval(list(range(1, 17))); m.eval([17]); print(len(m.scores))")
    r = subprocess.run([sys.executable, "-c", run, str(path)], capture_output=True, text=True)
if r.returncode:
    print(f"setup.sh: llama-cpp-python on a q8_0 GGUF: exit status {r.returncode} {r.stderr[-500:]}", file=sys.stderr)
sys.exit(2 if r.returncode < 0 else min(r.returncode, 1))
EOF
}
# Wheels built here are kept in our own cache, keyed by the requirement, the flags, the machine and the
# compiler (pip's own cache ignores the flags), so the next set-up on this machine (CI's fresh clone) installs
# in seconds instead of compiling again.
LLAMACPP_WHEELS="${XDG_CACHE_HOME:-$HOME/.cache}/midilm/llamacpp-wheels"
llamacpp_build() {  # CMAKE_ARGS, requirement, then extra pip install arguments
  local key dir
  key=$(printf '%s\n' "$1" "$2" "$(uname -m)" "$(gcc --version 2>/dev/null | head -1)" \
    "$(grep -m1 -o 'avx512[a-z_0-9]*\|amx[a-z_0-9]*' /proc/cpuinfo 2>/dev/null | sort -u | tr '\n' ' ')" \
    | sha256sum | cut -c1-16)
  dir="$LLAMACPP_WHEELS/$key"
  if ! ls "$dir"/llama_cpp_python-*.whl >/dev/null 2>&1; then
    mkdir -p "$dir.tmp"
    CMAKE_ARGS="$1" CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" \
      .venv/bin/python -m pip wheel -q --no-deps --no-cache-dir --no-binary llama-cpp-python -w "$dir.tmp" "$2"
    rm -rf "$dir" && mv "$dir.tmp" "$dir"
  fi
  .venv/bin/python -m pip install -q "${@:3}" "$dir"/llama_cpp_python-*.whl
}
if [ "$MODE" = all ] && [ "${MIDILM_LLAMACPP:-1}" != 0 ]; then
  LLAMACPP_ARGS="-DLLAVA_BUILD=OFF"
  if [ "$(uname -m)" = x86_64 ]; then
    NO_AMX="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
    LLAMACPP_ARGS+=" -DCMAKE_C_FLAGS='$NO_AMX' -DCMAKE_CXX_FLAGS='$NO_AMX'"
  fi
  LLAMACPP_ARGS="${CMAKE_ARGS:-$LLAMACPP_ARGS}"
  if ! .venv/bin/python -c "import llama_cpp" 2>/dev/null; then
    spec=$(.venv/bin/python -c 'import tomllib; print(next(r for r in tomllib.load(open("pyproject.toml", "rb"))
      ["project"]["optional-dependencies"]["llamacpp"] if r.startswith("llama-cpp-python")))')
    llamacpp_build "$LLAMACPP_ARGS" "$spec"
  fi
  CMAKE_ARGS="$LLAMACPP_ARGS" .venv/bin/python -m pip install -q -e ".[llamacpp]"
  stamp=.venv/.midilm-llamacpp-q8-ok
  built=$(llamacpp_lib_hash)
  if [ -z "$built" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$built" ]; then
    rc=0; llamacpp_q8_smoke || rc=$?
    if [ "$rc" = 2 ]; then
      echo "setup.sh: rebuilding llama-cpp-python with portable flags (-DGGML_NATIVE=OFF: AVX2, no AVX-512)" >&2
      version=$(.venv/bin/python -c "import llama_cpp; print(llama_cpp.__version__)")
      llamacpp_build "-DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF" "llama-cpp-python==$version" --force-reinstall --no-deps
      rc=0; llamacpp_q8_smoke || rc=$?
    fi
    [ "$rc" = 0 ] || { echo "setup.sh: llama-cpp-python fails on a q8_0 model (MIDILM_LLAMACPP=0 skips it)" >&2; exit 1; }
    llamacpp_lib_hash > "$stamp"
  fi
fi
