# Set-up, demo and tests. `make demo` and `make test` work on a fresh machine (Python 3.10+, network to PyPI).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch; GPU users: `make setup TORCH_SPEC=torch` (or install their CUDA build first).
TORCH_SPEC ?= torch==2.13.0

.PHONY: setup demo test test-all bench clean

$(BIN)/genprop: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

setup: $(BIN)/genprop

demo: setup
	mkdir -p out
	$(BIN)/genprop remove examples/clip.mp4 --first-frame examples/clip-remove.png -o out/clip.genprop-remove.mp4 --overwrite

test: setup
	$(BIN)/pytest -q -m "not slow"

test-all: setup
	$(BIN)/pytest -q

bench: setup
	$(BIN)/python benchmarks/bench_denoiser.py
	$(BIN)/python benchmarks/bench_memory.py
	$(BIN)/python benchmarks/bench_train.py

clean:
	rm -rf out .pytest_cache .hypothesis
