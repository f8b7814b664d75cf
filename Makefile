# Set-up and main jobs. Everything lives in a virtual environment (.venv) made here.
# torch is pinned to 2.13.0 in the same pip command as the package: that is the CPU build on this
# machine kind's disk, and pinning it stops pip from ever pulling a multi-GB CUDA build.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0
OUT    ?= results/quick

.PHONY: install reproduce test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

install: $(BIN)/python
	$(BIN)/python -m pip install --quiet "$(TORCH)" -e ".[test,triton,peers,data]"

reproduce: install
	$(BIN)/fastdnc reproduce --preset quick --out $(OUT)

test: install
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python benchmarks/run_all.py --out docs/benchmarks.md

clean:
	rm -rf $(VENV) build *.egg-info fastdnc/_C*.so
