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

# The crash tier (20 SIGKILLs of each action on scim2-server and on slapd: about 9 minutes,
# spent mostly waiting on those servers) runs beside the rest of the suite, and its report
# follows the suite's; with PYTEST_ARGS, one pytest runs what they select.
CRASH_LOG := .crash-tier.log

test: $(BIN)/.installed
	./scripts/system-deps.sh
	$(BIN)/ruff check .
	$(BIN)/mypy --strict $(TYPED)
ifeq ($(strip $(PYTEST_ARGS)),)
	$(BIN)/pytest -m crash --durations=5 -p no:cacheprovider > $(CRASH_LOG) 2>&1 & crash=$$!; \
	$(BIN)/pytest -m "not crash" --durations=30; suite=$$?; \
	wait $$crash; tier=$$?; echo "==== crash tier (ran beside the suite) ===="; \
	cat $(CRASH_LOG); test $$suite -eq 0 -a $$tier -eq 0
else
	$(BIN)/pytest --durations=30 $(PYTEST_ARGS)
endif

bench: $(BIN)/.installed
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

bench-quick: $(BIN)/.installed
	$(BIN)/python -m benchmarks.run --quick --output /tmp/wavekit-bench-quick.md
