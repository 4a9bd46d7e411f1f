# Set-up, demo and tests. `make demo` and `make test` work on a fresh machine (Python 3.10+, network to PyPI).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch; GPU users: `make setup TORCH_SPEC=torch` (or install their CUDA build first).
TORCH_SPEC ?= torch==2.13.0

.PHONY: setup demo test test-slow test-all bench toy toy-results device-wheels clean

$(BIN)/genprop: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

setup: $(BIN)/genprop

demo: setup
	mkdir -p out
	$(BIN)/genprop remove examples/toy.mp4 --first-frame examples/toy-remove.png -o out/toy.genprop-remove.mp4 \
		--preview out/toy.genprop-remove.png --overwrite

# Regenerate the default `toy` variant from scratch (data, backbone, adapter) into the package.
toy: setup
	$(BIN)/python scripts/build_toy.py

# ... plus the three ablation adapters, the evaluation set and `genprop eval` (docs/results.md).
toy-results: setup
	$(BIN)/python scripts/build_toy.py --ablations --eval

test: setup
	$(BIN)/pytest -q -m "not slow"

# The checks marked slow (regional torch.compile, a 2-process torchrun batch): about half a minute.
test-slow: setup
	$(BIN)/pytest -q -m slow

test-all: setup
	$(BIN)/pytest -q

bench: setup
	$(BIN)/python benchmarks/bench_denoiser.py
	$(BIN)/python benchmarks/bench_pipeline.py
	$(BIN)/python benchmarks/bench_io.py
	$(BIN)/python benchmarks/bench_swscale.py
	$(BIN)/python benchmarks/bench_memory.py
	$(BIN)/python benchmarks/bench_soak.py
	$(BIN)/python benchmarks/bench_train.py

# Wheels the GPU machine's image lacks (it has torch, transformers, accelerate, typer, rich, safetensors and the
# Hub client), at the versions installed here, for scripts/device_check.sh (about 42 MB, carried as .device).
device-wheels: setup
	$(BIN)/pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux_2_28_x86_64 \
		-d .device/wheels $$($(BIN)/pip list --format=freeze 2>/dev/null | grep -i -E '^(diffusers|av)==')

clean:
	rm -rf out .pytest_cache .hypothesis
