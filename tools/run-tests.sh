#!/usr/bin/env bash
# The test command behind `make test`: start the services the tests use (a single-node SLURM
# cluster, when tools/slurm/cluster.sh can start one), run pytest, and stop every daemon it
# started, also when a test fails. pytest's exit status is this script's (5 = no test ran
# counts as a failure like any other non-zero status).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
started_cluster=0
if [ -x tools/slurm/cluster.sh ] && [ "$(id -u)" -eq 0 ]; then
    if tools/slurm/cluster.sh status >/dev/null 2>&1; then
        echo "run-tests: using the SLURM test cluster that already runs (left running)" >&2
    elif tools/slurm/cluster.sh start; then
        started_cluster=1
    else
        echo "run-tests: the SLURM test cluster did not start; its test will report why" >&2
    fi
fi
stop() {
    if [ "$started_cluster" -eq 1 ]; then
        tools/slurm/cluster.sh stop || true
    fi
}
trap stop EXIT
PATH="$(dirname "$PY"):$PATH" "$PY" -m pytest -q "$@"
