# PES reproduction suite. `make help` lists the targets.
SHELL := /bin/bash
PROFILE ?= quick
RESULTS ?= results
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
EXTRAS ?= dev,data,control,bench
comma := ,
STAMP := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))
FIGURES := $(patsubst configs/figure/figure%.yaml,%,$(wildcard configs/figure/figure*.yaml))
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install test test-slow lint bench list-figures reproduce-all clean-results $(addprefix reproduce-figure-,$(FIGURES))

help: ## List the targets
	@grep -hE '^[a-zA-Z0-9_%-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | awk -F'\t' '{printf "  %-22s %s\n", $$1, $$2}'
	@echo "  reproduce-figure-N     regenerate figure N (N in: $(FIGURES)); see make list-figures"
	@echo "Variables: PROFILE=quick|paper (default quick), RESULTS=<dir> (default results)"

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[$(EXTRAS)]'
	@touch $@

install: $(STAMP) ## Create .venv and install the package with its extras (EXTRAS=dev,data,control,bench)

test: $(STAMP) ## Run the test suite (excludes @slow; a few minutes on 2 CPU cores)
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

test-slow: $(STAMP) ## Run only the slow tests (paper-profile checks)
	$(PY) -m pytest -q -m slow $(PYTEST_ARGS)

lint: $(STAMP) ## ruff check
	$(PY) -m ruff check pes experiments scripts tests benchmarks

bench: $(STAMP) ## Benchmarks vs evosax: results/bench/bench.csv + a printed table (BENCH_ARGS=--full ...)
	$(PY) scripts/bench.py $(BENCH_ARGS)

list-figures: $(STAMP) ## Figure number -> experiment -> expected outcome
	@$(PY) -m experiments.figures

# Figure N: its runs (resumable), its post-steps (cached), the merged CSV and the plot
# (experiments/reproduce.py); rerunning only redoes what changed.
$(addprefix reproduce-figure-,$(FIGURES)): reproduce-figure-%: $(STAMP)
	$(PY) -m experiments.reproduce figure=figure$* profile=$(PROFILE) results_root=$(RESULTS)
	@echo "figure $*: $(RESULTS)/$(PROFILE)/figures/figure$*.png"

reproduce-all: $(addprefix reproduce-figure-,$(FIGURES)) ## Every figure at PROFILE

clean-results: ## Delete results/$(PROFILE) (runs, merged CSVs, figures)
	rm -rf $(RESULTS)/$(PROFILE)
