# The two commands in the README: `make demo` and `make test`. Each sets up what it needs.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: demo test lint bench bench-quick install

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip >/dev/null
	$(BIN)/pip install -q -e ".[test]"
	touch $@

install: $(BIN)/.installed

demo: $(BIN)/.installed
	$(BIN)/wavekit demo

lint: $(BIN)/.installed
	$(BIN)/ruff check .

test: $(BIN)/.installed
	./scripts/system-deps.sh
	$(BIN)/ruff check .
	$(BIN)/pytest $(PYTEST_ARGS)

bench: $(BIN)/.installed
	$(BIN)/python -m benchmarks.run

bench-quick: $(BIN)/.installed
	$(BIN)/python -m benchmarks.run --quick --output /tmp/wavekit-bench-quick.md
