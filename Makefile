# The project's commands: `make test`, `make rehearsal` and `make demo`. Each builds .venv/ from scratch when needed.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
RUNS ?= runs
RENDERED ?= rendered

.PHONY: test test-slow test-all rehearsal demo results install gpu-check

# Beyond pip, the quick profile's data and the rehearsal's browser (dwlt_utils/prerequisites.py): Debian's
# dataset-fashion-mnist and chromium where apt-get can be used, else Fashion-MNIST downloaded with its checksums
# into data/fashion-mnist; seconds when both are there.
install: $(VENV)/.installed
	$(BIN)/python -m dwlt_utils.prerequisites

# torchattacks (an independent PGD the attack tests compare against, and the attacks AutoAttack is composed
# of: `eval_attack="autoattack"`) pins an old `requests`, so it is installed without its dependencies.
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

# The paper profile end to end on miniature genuine inputs (CPU, about 5 minutes), and notebook 04 in
# JupyterLab driven through Debian's chromium. On a GPU machine, `-m "rehearsal and gpu"` runs it on CUDA.
rehearsal: install
	$(BIN)/python -m pytest -m "rehearsal and not gpu" tests/rehearsal

# Tests too long for the default suite (minutes each), e.g. the threshold search end to end.
test-slow: install
	$(BIN)/python -m pytest -m "slow and not gpu"

test-all: install
	$(BIN)/python -m pytest -m "not gpu"

# The whole chain 01 → 06 in the quick profile; executed notebooks and their HTML land in $(RENDERED)/.
demo: install
	$(BIN)/python -m dwlt_utils.cli demo --run-root $(RUNS) --out $(RENDERED)

# The committed results/quick/: the quick chain with three seeds (about 35 minutes on 2 cores), its tables,
# figures and a README that says how they were made.
results: install
	$(BIN)/python -m dwlt_utils.cli results

# The GPU check on a CUDA machine (about 6 minutes on one H200): the machine's own Python with PyTorch, no
# venv and no network; its report lands in results/gpu/<device>-<date>.{json,md}. Without CUDA, one sentence.
gpu-check:
	@$(PYTHON) -c "import torch" 2>/dev/null || { echo "make gpu-check needs a Python with PyTorch, and $(PYTHON) has none: give it one (make gpu-check PYTHON=/path/to/python)." >&2; exit 2; }
	PYTHONPATH=.:tests $(PYTHON) -m dwlt_utils.gpu_check
