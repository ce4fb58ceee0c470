#!/usr/bin/env bash
# Install llama-cpp-python into a venv from a wheel built with known CPU flags (the Makefile
# runs it before `pip install -e .`, which then finds the requirement satisfied).
#
#   packaging/install_llama_cpp.sh VENV_PYTHON [PIP_LOG]
#
# Why: PyPI has no Linux wheels of llama-cpp-python, so pip compiles llama.cpp, and ggml's
# default is -march=native: every instruction set the compiler sees, AMX included. A virtual
# machine may show the CPU's AMX to the compiler but not let a process use it: seen on a Xeon
# (Sapphire Rapids) VM, where such a build crashes with SIGSEGV in llama_decode on any prompt
# longer than one batch (~512 tokens). pip also caches the wheel it built and reuses it on
# the next install, whatever machine that is. So on x86-64 the wheel is built for x86-64-v3
# (SSE4.2, AVX, AVX2, FMA, F16C, BMI2: every x86 desktop CPU since ~2015), once, into a folder
# of its own keyed by the flags, and installed from there; elsewhere (arm64) ggml's defaults.
# LLAMA_CMAKE overrides the flags (e.g. LLAMA_CMAKE=-DGGML_NATIVE=ON for a local-only build).
set -euo pipefail
py=${1:?usage: install_llama_cpp.sh VENV_PYTHON [PIP_LOG]}
log=${2:-/dev/null}
here=$(cd "$(dirname "$0")/.." && pwd)
[ "$log" = /dev/null ] || : >"$log"

if [ -z "${LLAMA_CMAKE+x}" ]; then
    case "$(uname -m)" in
        x86_64|amd64)
            LLAMA_CMAKE="-DGGML_NATIVE=OFF -DGGML_SSE42=ON -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
            ;;
        *) LLAMA_CMAKE="" ;;
    esac
fi
# The requirement as pyproject.toml states it (one place for the pin).
req=$("$py" - "$here/pyproject.toml" <<'EOF'
import sys, tomllib
deps = tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]
print(next(d for d in deps if d.lower().replace("_", "-").startswith("llama-cpp-python")))
EOF
)
key=$(printf '%s|%s|%s' "$(uname -m)" "$("$py" -c 'import sys; print(sys.implementation.cache_tag)')" \
      "$LLAMA_CMAKE" | cksum | cut -d' ' -f1)
wheels=${MEMORY_R1_WHEELS:-${XDG_CACHE_HOME:-$HOME/.cache}/memory-r1/llama-wheels}/$key

install_from_folder() {
    "$py" -m pip install -q --no-index --no-deps --force-reinstall --find-links "$wheels" "$req" >>"$log" 2>&1
}

echo "pip install $req (llama.cpp flags: ${LLAMA_CMAKE:-ggml defaults})"
if [ -d "$wheels" ] && install_from_folder; then
    exit 0
fi
echo "building llama.cpp (a few minutes on 2 cores; the wheel is kept in $wheels)"
mkdir -p "$wheels"
tmp=$(mktemp -d "$wheels.tmp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
# --no-cache-dir: never take a wheel pip built earlier with other flags.
CMAKE_ARGS="$LLAMA_CMAKE" "$py" -m pip wheel -q --no-cache-dir --no-deps -w "$tmp" "$req" >>"$log" 2>&1
mv "$tmp"/llama_cpp_python-*.whl "$wheels"/
install_from_folder
