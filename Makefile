# Two commands on a fresh machine:
#   make run    install everything into .venv, then run the default workflow (built-in benchmark)
#   make test   install everything plus the test tools into .venv, then run the tests
# and, while working on the library:
#   make test-fast  the tests without the workflow runs, the SLURM cluster and the browser
#                   (no system packages needed)
PYTHON ?= python3
VENV ?= .venv
CORES ?= all
BIN = $(VENV)/bin

.PHONY: run test test-fast install install-test lint dry-run clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

install: $(BIN)/python
	$(BIN)/pip install --quiet -e ".[workflow]"

install-test: $(BIN)/python
	$(BIN)/pip install --quiet -e ".[workflow,test]"

run: install
	$(BIN)/snakemake --cores $(CORES)

test: install-test
	bash tools/system-deps.sh
	PY=$(BIN)/python bash tools/run-tests.sh

test-fast: install-test
	$(BIN)/python -m pytest -q -m "not workflow and not slurm and not browser"

lint: install
	$(BIN)/snakemake --lint

dry-run: install
	$(BIN)/snakemake -n

clean:
	rm -rf results logs benchmarks .snakemake
