# Two entry points: `make demo` (the shipped toy model animates a held-out photo) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test install install-test bench bench-full

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install -q -e .

install-test: $(BIN)/python
	$(BIN)/pip install -q -e ".[reference,test]"

demo: install
	$(BIN)/python -m svd_tools.demo --output outputs/demo.mp4 outputs/demo.gif

test: install-test
	$(BIN)/python -m pytest -q

bench: install-test
	$(BIN)/python -m bench.run

bench-full: install-test
	$(BIN)/python -m bench.full
