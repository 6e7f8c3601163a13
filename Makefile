# gradnorm-repro. `make help` lists the targets; the README's first screen shows the two that matter.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.DEFAULT_GOAL := help
.PHONY: help install test lint reproduce-toy reproduce-toy-all report clean

help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-20s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## create .venv and install the project with its dev tools

test: $(STAMP) ## run the test suite (installs first if needed)
	$(PY) -m pytest -q

lint: $(STAMP) ## ruff
	$(VENV)/bin/ruff check gradnorm scripts experiments tests run.py

reproduce-toy: $(STAMP) ## the toy reproduction (paper Figure 2): sweep, then results/toy/
	$(PY) scripts/reproduce.py toy

reproduce-toy-all: $(STAMP) ## Figure 2, toy grid search + GradNorm static (Fig. 4), toy α sweep (Figs. 5, 7): results/toy/
	$(PY) scripts/reproduce.py toy $(ARGS)
	$(PY) scripts/reproduce.py toy_grid $(ARGS)
	$(PY) scripts/reproduce.py toy_alpha $(ARGS)

report: $(STAMP) ## tables, figures, results/REPORT.md from existing runs (RUNS=dir: just aggregate that folder)
	$(if $(RUNS),$(PY) scripts/report.py $(RUNS),$(PY) scripts/report.py --all)

clean: ## remove run outputs (not results/)
	rm -rf outputs multirun runs wandb
