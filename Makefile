# The course's commands. Each sets up .venv itself (reinstalling only when requirements.txt changes).
#   make book    execute every chapter in tiny mode, then build the Jupyter Book into _build/html
#   make test    unit, parity, checker and notebook (nbval) tests, plus the book build and screenshots
#   make lab     JupyterLab on the repository
#   make sync    pair every notebook with its py:percent file (jupytext)
#   make assets  retrain every tiny checkpoint in models/ (deterministic, CPU)
#   make pins    regenerate requirements-colab.txt and environment.yml from requirements.txt
#   make bench   run the benchmark scripts
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
# Offline tiny mode with one thread per notebook kernel: the stored outputs are reproduced exactly.
export MMLLM_MODE ?= tiny
export HF_HUB_OFFLINE ?= 1
export MMLLM_THREADS ?= 1
export PYTHONHASHSEED := 0
# The same floating-point code paths on every x86-64 CPU with AVX2, Intel or AMD, so stored outputs
# reproduce: PyTorch's own kernels, oneDNN's, and MKL's vendor-neutral branch (conditional numerical
# reproducibility; MKL ignores MKL_CBWR=AVX2 on AMD processors and takes a path of its own there).
export ATEN_CPU_CAPABILITY := avx2
export MKL_CBWR := COMPATIBLE
export ONEDNN_MAX_CPU_ISA := AVX2
NOTEBOOKS := $(sort $(wildcard chapters/*.ipynb solutions/*.ipynb))
JOBS ?= 2

.PHONY: book test lab sync assets pins bench setup clean

setup:
	@scripts/setup_env.sh python

book:
	@scripts/setup_env.sh book
	$(PY) scripts/execute_notebooks.py --jobs $(JOBS) $(NOTEBOOKS)
	$(PY) scripts/build_book.py
	@echo "The book is ready: open file://$(CURDIR)/_build/html/index.html"

test:
	@scripts/setup_env.sh browser
	$(PY) -m pytest -n $(JOBS) --dist loadfile \
	  --nbval --nbval-current-env --nbval-sanitize-with sanitize.cfg \
	  tests chapters solutions

lab:
	@scripts/setup_env.sh python
	MMLLM_MODE=auto MMLLM_THREADS= $(VENV)/bin/jupyter lab --notebook-dir=.

sync:
	@scripts/setup_env.sh python
	$(VENV)/bin/jupytext --sync $(NOTEBOOKS)

assets:
	@scripts/setup_env.sh python
	$(PY) scripts/train_tiny_models.py

pins:
	@scripts/setup_env.sh python
	$(PY) scripts/make_pins.py

bench:
	@scripts/setup_env.sh python
	MMLLM_THREADS= $(PY) scripts/bench_vit.py
	$(PY) scripts/bench_instruct.py

clean:
	rm -rf _build .pytest_cache
