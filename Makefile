# Two commands on a fresh machine:
#   make run    install everything into .venv, then run the default workflow (built-in benchmark)
#   make test   install everything plus the test tools into .venv, then run the tests
PYTHON ?= python3
VENV ?= .venv
CORES ?= all
BIN = $(VENV)/bin

.PHONY: run test install install-test lint dry-run clean

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

lint: install
	$(BIN)/snakemake --lint

dry-run: install
	$(BIN)/snakemake -n

clean:
	rm -rf results logs benchmarks .snakemake
