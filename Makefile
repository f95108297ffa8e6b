# Two commands for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-all lint bench mutation clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/eqc-enrich demo

# `make test`: the developer's loop, 4 to 5 minutes on 2 cores (the README has the measured times). The
# independent tests run 4 at a time (most wait on a simulated EQC, not the CPU); the ones held to timing run
# after, alone; property tests draw a fifth of their examples; the longest end-to-end cases (marked `slow`) are
# left to `make test-all`, which .ci/run runs: every test, every example.
PARALLEL := -n 4 --dist loadfile

# Python's own bytecode cache, even where the environment turns it off (PYTHONDONTWRITEBYTECODE): without it every
# `eqc-enrich` process a test starts compiles the package again (0.6 s of CPU each) and every pytest process
# rewrites the test modules' asserts again (5 s each); with it the suite spends its CPU on the tests.
unexport PYTHONDONTWRITEBYTECODE

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy

test: lint
	$(BIN)/pytest $(PARALLEL) -m "not slow and not serial"
	$(BIN)/pytest -m "serial and not slow"

test-all: lint
	EQC_ENRICH_THOROUGH=1 $(BIN)/pytest $(PARALLEL) -m "not serial"
	EQC_ENRICH_THOROUGH=1 $(BIN)/pytest -m serial

bench: $(STAMP)
	$(BIN)/eqc-enrich bench --simulate --out bench-report

# Mutation testing of the core modules ([tool.mutmut] in pyproject.toml; score and survivors in
# docs/mutation.md). Over an hour on two busy cores (docs/mutation.md); not part of `make test` or .ci/run.
mutation: $(STAMP)
	rm -rf mutants
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/mutmut run --max-children 2
	$(BIN)/mutmut results

clean:
	rm -rf $(VENV) build *.egg-info mutants
