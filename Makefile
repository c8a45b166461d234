# A newcomer's two commands: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# torch==2.13.0 goes in first: on our machines it is the CPU wheel on local disk, and the package's
# own `torch>=` range is then already satisfied (any other torch request pulls a multi-GB CUDA build).
TORCH  ?= torch==2.13.0

.PHONY: demo test install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/sm70 demo

# One torch thread per process: the suite runs servers, DDP workers and the pipeline as subprocesses
# beside the test process, and tiny-model steps are 7-10x slower when two processes fight over 2 cores.
test: install
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs
