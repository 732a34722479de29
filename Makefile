# The two commands of the README: `make demo` (set up, run the default suite, report) and `make test`.
PYTHON ?= python3
VENV ?= .venv
# The CPU wheel of torch lies on this machine's disk; name another spec (e.g. TORCH=torch) on a GPU machine.
TORCH ?= torch==2.13.0
BIN = $(VENV)/bin
SUITE ?= suites/packing.yaml

.PHONY: setup demo test clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev,data]"
	touch $@

demo: setup
	$(BIN)/lstmbench run $(SUITE)
	$(BIN)/lstmbench report

test: setup
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) *.egg-info
