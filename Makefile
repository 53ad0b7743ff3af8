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
.PHONY: help install test test-slow test-portable mutate lint bench list-figures reproduce-all clean-results $(addprefix reproduce-figure-,$(FIGURES))

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

PORTABLE_ISAS ?= AVX2 SSE4_2
test-portable: $(STAMP) ## The numerical tests again with XLA limited to other CPU instruction sets (PORTABLE_ISAS)
	@set -e; case "$$(uname -m)" in x86_64|amd64) ;; *) echo "test-portable: not an x86 CPU, nothing to restrict"; exit 0;; esac; \
	for isa in $(PORTABLE_ISAS); do \
	  echo "== numerics with XLA_FLAGS=--xla_cpu_max_isa=$$isa"; \
	  XLA_FLAGS="$${XLA_FLAGS:+$$XLA_FLAGS }--xla_cpu_max_isa=$$isa" \
	    $(PY) -m pytest -q -m "numerics and not slow" -p no:cacheprovider $(PYTEST_ARGS); \
	done

mutate: $(STAMP) ## Apply known ES/PES bugs to a copy; each must fail a fast test (MUTATE_ARGS=--all|--only NAME)
	$(PY) -m tests.mutations $(MUTATE_ARGS)

lint: $(STAMP) ## ruff check
	$(PY) -m ruff check pes experiments scripts tests benchmarks

bench: $(STAMP) ## Benchmarks vs evosax: results/bench/bench.csv + a printed table (BENCH_ARGS=--full ...)
	$(PY) scripts/bench.py $(BENCH_ARGS)

list-figures: $(STAMP) ## Figure number -> experiment -> expected outcome
	@$(PY) -m experiments.figures

# Figure N: run its configured runs (resumable), merge the CSV, then plot.
$(RESULTS)/$(PROFILE)/figure%/metrics.csv: $(STAMP) configs/figure/figure%.yaml $(wildcard pes/*.py pes/*/*.py experiments/*.py configs/*/*.yaml)
	$(PY) -m experiments.reproduce figure=figure$* profile=$(PROFILE) results_root=$(RESULTS)

$(RESULTS)/$(PROFILE)/figures/figure%.png: $(RESULTS)/$(PROFILE)/figure%/metrics.csv scripts/plot_figure%.py scripts/_style.py
	$(PY) scripts/plot_figure$*.py $< $@

.PRECIOUS: $(RESULTS)/$(PROFILE)/figure%/metrics.csv

$(addprefix reproduce-figure-,$(FIGURES)): reproduce-figure-%: $(RESULTS)/$(PROFILE)/figures/figure%.png
	@echo "figure $*: $<"

reproduce-all: $(addprefix reproduce-figure-,$(FIGURES)) ## Every figure at PROFILE

clean-results: ## Delete results/$(PROFILE) (runs, merged CSVs, figures)
	rm -rf $(RESULTS)/$(PROFILE)
