# The two commands of the README: `make demo` (set up, run the default suite, report) and `make test`.
PYTHON ?= python3
VENV ?= .venv
# The CPU wheel of torch lies on this machine's disk; name another spec (e.g. TORCH=torch) on a GPU machine.
TORCH ?= torch==2.13.0
BIN = $(VENV)/bin
SUITE ?= suites/packing.yaml

.PHONY: setup demo test test-fast clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev,data,keras,keras-jax]"
	touch $@

# reports only the suite it ran (its folder under results/), never the committed reference/ results
demo: setup
	$(BIN)/lstmbench run $(SUITE) --out results
	$(BIN)/lstmbench report results/$$($(BIN)/python -c "from lstmbench.suite import load_suite; print(load_suite('$(SUITE)').name)")
	$(BIN)/lstmbench recommend results/$$($(BIN)/python -c "from lstmbench.suite import load_suite; print(load_suite('$(SUITE)').name)")

test: setup
	$(BIN)/python -m pytest

# the edit loop: every test but the slow ones (real processes, whole suites, simulations); CI runs `make test`
test-fast: setup
	$(BIN)/python -m pytest -m "not slow"

clean:
	rm -rf $(VENV) *.egg-info
