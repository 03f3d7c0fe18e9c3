# The project's two commands: `make test` and `make demo`. Both build .venv/ from scratch when needed.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
RUNS ?= runs
RENDERED ?= rendered

.PHONY: test test-all demo install

install: $(VENV)/.installed

# torchattacks (an independent PGD the attack tests compare against) pins an old `requests`, so it is
# installed without its dependencies.
$(VENV)/.installed: pyproject.toml .ci/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -c .ci/constraints.txt -e ".[dev]"
	$(BIN)/python -m pip install --no-deps -c .ci/constraints.txt torchattacks
	touch $@

# Lint and format check first (seconds), then the default suite.
test: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

test-all: install
	$(BIN)/python -m pytest -m "not gpu"

# The whole chain 01 → 06 in the quick profile; executed notebooks and their HTML land in $(RENDERED)/.
demo: install
	$(BIN)/python -m dwlt_utils.cli demo --run-root $(RUNS) --out $(RENDERED)
