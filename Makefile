# Two commands set everything up on a fresh machine:
#   make run    creates .venv, installs cdatlib, trains the default model on data_samples/
#   make test   creates .venv, installs cdatlib, runs every notebook (nbdev-test) and the pytest suite
# TORCH pins the wheel: here it is the CPU build that lies on this disk; on an ordinary Linux GPU box the same
# PyPI release is the CUDA build. Override it (e.g. `make test TORCH=torch==2.14.1`) to use another release.
VENV  ?= .venv
PY    := $(VENV)/bin/python
TORCH ?= torch==2.13.0
STAMP := $(VENV)/.installed-stamp
# Real-data cells and tests read $CDATLIB_SHARED_DATA; a checkout beside a shared/data folder (as in CI) uses that
# folder when the variable is not set. Without either they skip, saying why.
ifeq ($(origin CDATLIB_SHARED_DATA), undefined)
  ifneq ($(wildcard ../shared/data),)
    export CDATLIB_SHARED_DATA := $(abspath ../shared/data)
  endif
endif

.PHONY: install run test docs check lab

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)" -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# --resume: the first call trains, a later one reports the finished run and keeps it (exit 0 both times)
run: $(STAMP)
	$(VENV)/bin/cdat train --resume

test: $(STAMP)
	# one BLAS/OpenMP thread per notebook: two notebooks run side by side, and oversubscribed cores make torch crawl
	OMP_NUM_THREADS=1 $(VENV)/bin/nbdev-test --n-workers 2
	$(PY) -m pytest -q tests

# the course in JupyterLab (installs the `course` extra the first time)
lab: $(STAMP)
	test -x $(VENV)/bin/jupyter-lab || $(PY) -m pip install --quiet -e ".[course]"
	$(VENV)/bin/jupyter-lab nbs/ $$([ "$$(id -u)" = 0 ] && echo --allow-root)   # containers and cloud boxes run as root

docs: $(STAMP)
	$(PY) tools/build_docs.py

# What CI checks besides the tests: the library is exactly what the notebooks export, and the notebooks are clean.
check: $(STAMP)
	$(VENV)/bin/nbdev-export
	@git diff --exit-code -- cdatlib && test -z "$$(git status --porcelain -- cdatlib)" \
	  || (echo "cdatlib/ differs from what nbdev-export makes of nbs/: edit the notebook, export, commit both"; exit 1)
	$(VENV)/bin/nbdev-clean
	@git diff --exit-code -- nbs \
	  || (echo "notebooks are not clean: run nbdev-clean and commit"; exit 1)
