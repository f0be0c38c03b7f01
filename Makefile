# Two entry points: `make demo` (image -> video with the tiny model) and `make test`.
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
	$(BIN)/python image_to_video.py --config svd_tiny --random-weights --image assets/demo.png --output outputs/demo.mp4

test: install-test
	$(BIN)/python -m pytest -q

bench: install-test
	$(BIN)/python -m bench.run

bench-full: install-test
	$(BIN)/python -m bench.full
