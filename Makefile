# The course's commands. Each sets up .venv itself (reinstalling only when requirements.txt changes).
#   make book    execute every chapter in tiny mode, then build the Jupyter Book into _build/html
#   make test    unit, parity, checker and notebook (nbval) tests, plus the book build and screenshots
#   make check   the quick inner loop: unit tests without the notebooks and the slow tests (under a minute)
#   make test-portable   make test again under two other floating-point configurations (before closing
#                work that touches a notebook)
#   make rehearse  run every notebook's full-mode code on stand-ins of the real checkpoints (CPU, offline)
#                and re-record the workload the T4 plan costs (configs/t4_workload.json)
#   make lab     JupyterLab on the repository
#   make sync    pair every notebook with its py:percent file (jupytext)
#   make assets  retrain every tiny checkpoint in models/ (deterministic, CPU)
#   make pins    regenerate requirements-colab.txt and environment.yml from requirements.txt
#   make bench   run the benchmark scripts
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
# Offline tiny mode. One thread per notebook kernel because two run side by side; it is for speed,
# not for reproducibility: what nbval compares holds on any CPU and thread count (README).
export MMLLM_MODE ?= tiny
export HF_HUB_OFFLINE ?= 1
export MMLLM_THREADS ?= 1
export PYTHONHASHSEED := 0
NOTEBOOKS := $(sort $(wildcard chapters/*.ipynb solutions/*.ipynb))
JOBS ?= 2

.PHONY: book test check test-portable rehearse lab sync assets pins bench setup clean

setup:
	@scripts/setup_env.sh python

book:
	@scripts/setup_env.sh book
	$(PY) scripts/execute_notebooks.py --jobs $(JOBS) $(NOTEBOOKS)
	$(PY) scripts/build_book.py
	@echo "The book is ready: open file://$(CURDIR)/_build/html/index.html"

test:
	@scripts/setup_env.sh browser
	$(PY) -m pytest -n $(JOBS) --dist loadfile --durations=15 \
	  --nbval --nbval-current-env --nbval-sanitize-with sanitize.cfg \
	  tests chapters solutions

check:
	@scripts/setup_env.sh python
	$(PY) -m pytest -n $(JOBS) -m "not slow" tests

test-portable:
	@scripts/setup_env.sh browser
	$(PY) scripts/test_portable.py

rehearse:
	@scripts/setup_env.sh python
	$(PY) scripts/rehearse.py --jobs $(JOBS) --workload configs/t4_workload.json

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
