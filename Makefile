# Every target bootstraps .venv itself; the stamp makes that a no-op when nothing changed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONSTRAINTS ?= constraints.txt
STAMP := $(VENV)/.installed
# Keep smp/timm from retrying a model hub that is unreachable on offline machines.
export HF_HUB_OFFLINE ?= 1

.PHONY: demo test test-fast bench bench-report lint format clean

$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/camsweep synth --out demo-data --scale 0.1 --size 320x256 --seed 0 --overwrite
	$(BIN)/camsweep data check demo-data
	$(BIN)/camsweep run sweeps/demo.yaml

test: $(STAMP)
	$(BIN)/python -m pytest -q --durations=15

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

# All registered benchmarks, or some: `make bench BENCH="cam_quality step_overhead"`. Figures go to
# stdout and benchmarks/results.jsonl (CAMSWEEP_BENCH_RESULTS overrides); bench-report writes
# the README's tables from that file.
bench: $(STAMP)
	$(BIN)/python -m benchmarks.run $(BENCH)

bench-report: $(STAMP)
	$(BIN)/python -m benchmarks.report

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) demo-data demo-results bench-data
