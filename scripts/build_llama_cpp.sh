#!/usr/bin/env bash
# Install llama-cpp-python[server] (the tests' real OpenAI-compatible server) from a portable build:
#
#   scripts/build_llama_cpp.sh .venv/bin/python
#
# Why not a plain `pip install llama-cpp-python`: it compiles llama.cpp for the build machine's CPU (-march=native),
# and a virtual machine can advertise instructions its guest cannot run (AMX tiles on a Sapphire Rapids VM: the
# first multi-token batch dies with SIGILL). pip's wheel cache then hands that native wheel to every later install
# on the machine, whatever the CPU, because it keys built wheels by the sdist, not by the flags.
#
# So: the CPU features are read from /proc/cpuinfo (never assumed), AVX-512 and AMX are always off (the server only
# runs tests; speed does not matter), and the wheel is built with pip's cache off into a wheelhouse under .whl/
# (ignored) whose name is a hash of the version, the flags, the architecture and the compiler. A wheel built with
# other flags is never picked up. After the build, the compile log is checked for the flags (and for
# -march=native), and the installed library must report the same features at run time.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-.venv/bin/python}
VERSION=0.3.36

arch=$(uname -m)
args=(-DGGML_NATIVE=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF)
want=()     # features the library must report (llama_print_system_info)
if [[ $arch == x86_64 ]]; then
  flags=" $(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2) "
  has() { [[ $flags == *" $1 "* ]]; }
  for f in sse4_2:SSE42 avx:AVX avx2:AVX2 fma:FMA f16c:F16C bmi2:BMI2; do
    cpu=${f%%:*} opt=${f##*:}
    if has "$cpu"; then args+=("-DGGML_$opt=ON"); want+=("$opt"); else args+=("-DGGML_$opt=OFF"); fi
  done
  args+=(-DGGML_AVX_VNNI=OFF -DGGML_AVX512=OFF -DGGML_AVX512_VBMI=OFF -DGGML_AVX512_VNNI=OFF
         -DGGML_AVX512_BF16=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF)
fi
cmake_args="${args[*]}"
key=$(printf '%s\n' "$VERSION" "$arch" "$cmake_args" "$(cc --version | head -1)" | sha256sum | cut -c1-16)
house=.whl/llama-cpp-$key
wheel=$(ls "$house"/llama_cpp_python-"$VERSION"-*.whl 2>/dev/null | head -1 || true)

check_log() {  # the compile commands of ggml's CPU backend carry our flags, and no native or AVX-512/AMX ones
  local log=$1
  grep -q -- 'ggml-cpu/ggml-cpu.c.o -c' "$log" || { echo "no ggml-cpu compile command in $log"; return 1; }
  if grep -E -q -- '-march=native|-mcpu=native|-mavx512|-mamx' "$log"; then
    echo "the build used native, AVX-512 or AMX flags ($log):"
    grep -E -o -- '-march=native|-mcpu=native|-mavx512[a-z]*|-mamx[a-z-]*' "$log" | sort | uniq -c
    return 1
  fi
  local f
  for f in "${want[@]}"; do
    local m=-m$(tr 'A-Z' 'a-z' <<<"$f"); [[ $f == SSE42 ]] && m=-msse4.2
    grep -q -- " $m " "$log" || { echo "$f was asked for but $m is not in the compile commands ($log)"; return 1; }
  done
}

if [[ -z $wheel ]]; then
  echo "building llama-cpp-python $VERSION (portable: $cmake_args); about 10 min on 2 cores, once per flag set"
  rm -rf "$house.tmp" && mkdir -p "$house.tmp"
  start=$(date +%s)
  # -v: scikit-build-core prints the compile commands (cmake.verbose), kept in build.log to check the flags.
  if ! CMAKE_ARGS="$cmake_args" CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) "$PY" -m pip wheel -v --no-cache-dir \
       --no-deps --no-binary llama-cpp-python -w "$house.tmp" "llama-cpp-python==$VERSION" \
       > "$house.tmp/build.log" 2>&1; then
    tail -n 40 "$house.tmp/build.log"; echo "llama-cpp-python build failed; log: $house.tmp/build.log"; exit 1
  fi
  echo "built in $(( $(date +%s) - start ))s"
  check_log "$house.tmp/build.log"
  rm -rf "$house" && mv "$house.tmp" "$house"
  wheel=$(ls "$house"/llama_cpp_python-"$VERSION"-*.whl)
else
  check_log "$house/build.log"
fi

# --force-reinstall --no-deps replaces a native build an older Makefile installed; the extras' deps come after.
"$PY" -m pip install -q --no-cache-dir --force-reinstall --no-deps "$wheel"
"$PY" -m pip install -q "$wheel[server]"
info=$("$PY" -c "import llama_cpp; print(llama_cpp.llama_print_system_info().decode())")
echo "llama.cpp: $info"
for f in AVX512 AMX; do
  if [[ $info == *"$f"* ]]; then echo "the installed llama_cpp reports $f: not the portable build ($wheel)"; exit 1; fi
done
for f in "${want[@]}"; do
  # system info names AVX2 as "AVX2 = 1"; SSE42 as "SSE3"/"SSSE3" only, so it is not checked
  [[ $f == SSE42 || $info == *"$f = 1"* ]] || { echo "the installed llama_cpp lacks $f ($wheel)"; exit 1; }
done
