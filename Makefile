# The two commands in the README: `make demo` and `make test`. Each sets up what it needs,
# from uv.lock: a fresh clone installs exactly the dependency set CI tested.
VENV ?= .venv
PYTHON ?= python3
UV_VERSION ?= 0.13.9
TOOLS := .tools
UV := $(TOOLS)/bin/uv
BIN := $(VENV)/bin
export UV_PROJECT_ENVIRONMENT := $(abspath $(VENV))

.PHONY: demo test lint typecheck lock bench bench-quick install

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install -q "uv==$(UV_VERSION)"

# Fails when uv.lock no longer matches pyproject.toml (a stale lock never reaches CI green).
$(BIN)/.installed: pyproject.toml uv.lock $(UV)
	$(UV) lock --check
	$(UV) sync --locked --all-extras --python $(PYTHON) --quiet
	touch $@

install: $(BIN)/.installed

lock: $(UV)
	$(UV) lock

demo: $(BIN)/.installed
	$(BIN)/wavekit demo

lint: $(BIN)/.installed
	$(BIN)/ruff check .

# Everything is held to mypy --strict: the package, the flows and the blocks.
TYPED := src flows blocks

typecheck: $(BIN)/.installed
	$(BIN)/mypy --strict $(TYPED)

test: $(BIN)/.installed
	./scripts/system-deps.sh
	$(BIN)/ruff check .
	$(BIN)/mypy --strict $(TYPED)
	$(BIN)/pytest --durations=30 $(PYTEST_ARGS)

bench: $(BIN)/.installed
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

bench-quick: $(BIN)/.installed
	$(BIN)/python -m benchmarks.run --quick --output /tmp/wavekit-bench-quick.md
