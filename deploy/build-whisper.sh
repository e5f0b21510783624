#!/bin/bash
# Build pywhispercpp (whisper.cpp and ggml) from its PyPI source into a virtualenv, for the CPU
# of this machine; the Makefile and install.sh both use it. Usage: deploy/build-whisper.sh VENV
#
#   PYWHISPERCPP_VERSION=1.5.1      the version built
#   GGML_CPU_ARM_ARCH=armv8-a       -march on aarch64 (armv8-a runs on a Pi 4's Cortex-A72)
#   PYWHISPERCPP_WHEELS=            a folder: keep the built wheel there, and install it from
#                                   there next time when version, flags, CPU architecture,
#                                   Python and compiler are the same (several Pis, or the
#                                   emulated runs of deploy/pi-emulated.sh); empty for none
#
# Why not PyPI's wheel: on x86-64 it is built for any AVX2 CPU and without ggml's llamafile
# matrix kernels, which make q8_0 the fastest accurate weight type (docs/benchmarks.md); its
# aarch64 wheel targets newer ARM cores and has crashed on a Pi 4, so there the build is for
# plain ARMv8.
set -euo pipefail

PROG=build-whisper
# shellcheck source=deploy/layout.sh
. "$(dirname "${BASH_SOURCE[0]}")/layout.sh"
[ $# -eq 1 ] || die "usage: $0 VENV"
VENV=$1
PYWHISPERCPP_VERSION=${PYWHISPERCPP_VERSION:-1.5.1}
GGML_CPU_ARM_ARCH=${GGML_CPU_ARM_ARCH:-armv8-a}
[ -x "$VENV/bin/python" ] || die "$VENV: no virtualenv there"

if [ "$(uname -m)" = aarch64 ]; then
    arch="-DGGML_NATIVE=OFF -DGGML_CPU_ARM_ARCH=$GGML_CPU_ARM_ARCH"  # NATIVE=ON ignores -march
else
    arch="-DGGML_NATIVE=ON"
fi
# pywhispercpp's setup.py gives the libraries an $ORIGIN rpath only in editable builds; without
# one _pywhispercpp cannot find libwhisper and libggml installed beside it.
flags="$arch -DGGML_LLAMAFILE=ON -DCMAKE_INSTALL_RPATH=\$ORIGIN -DCMAKE_BUILD_WITH_INSTALL_RPATH=ON"
marker=$VENV/.pywhispercpp-source-build
if [ "$(cat "$marker" 2>/dev/null)" = "$PYWHISPERCPP_VERSION $flags" ]; then
    step "pywhispercpp $PYWHISPERCPP_VERSION: already built from source ($arch)"
    exit 0
fi
pip=("$VENV/bin/python" -m pip --disable-pip-version-check)
building="pywhispercpp $PYWHISPERCPP_VERSION: building whisper.cpp from source ($arch; 2 min here, more on a Pi)"
if [ -n "${PYWHISPERCPP_WHEELS:-}" ]; then
    # The wheel's name says only version, Python and platform: the key adds what else shapes it.
    python_tag=$("$VENV/bin/python" -c 'import sys; print(sys.implementation.cache_tag)')
    compiler=$("${CXX:-c++}" --version 2>/dev/null | head -1 || true)
    shaped_by=("$PYWHISPERCPP_VERSION $flags" "$(uname -m) $python_tag" "$compiler")
    # GGML_NATIVE=ON builds for this CPU's own instruction set: another CPU needs its own.
    [ "$arch" != "-DGGML_NATIVE=ON" ] || shaped_by+=("$(grep -m1 '^flags' /proc/cpuinfo || true)")
    key=$(printf '%s\n' "${shaped_by[@]}" | sha256sum | cut -c1-16)
    wheels=$PYWHISPERCPP_WHEELS/$key
    if ! compgen -G "$wheels/pywhispercpp-*.whl" >/dev/null; then
        step "$building"
        rm -rf "$wheels.tmp"
        CMAKE_ARGS="$flags" "${pip[@]}" wheel -q --no-cache-dir --no-deps \
            --no-binary pywhispercpp -w "$wheels.tmp" "pywhispercpp==$PYWHISPERCPP_VERSION"
        mv "$wheels.tmp" "$wheels"
    else
        step "pywhispercpp $PYWHISPERCPP_VERSION: the wheel built before ($arch, $wheels)"
    fi
    "${pip[@]}" install -q --force-reinstall --no-deps "$wheels"/pywhispercpp-*.whl
else
    step "$building"
    # No pip cache: a wheel built earlier with other flags must not be reused.
    CMAKE_ARGS="$flags" "${pip[@]}" install -q --no-cache-dir --force-reinstall --no-deps \
        --no-binary pywhispercpp "pywhispercpp==$PYWHISPERCPP_VERSION"
fi
"$VENV/bin/python" -c "import _pywhispercpp" || die "the pywhispercpp build does not load"
echo "$PYWHISPERCPP_VERSION $flags" > "$marker"
