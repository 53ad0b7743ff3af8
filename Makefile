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
TEST_WORKERS ?= 2
XDIST := -n $(TEST_WORKERS) --dist loadfile

.DEFAULT_GOAL := help
.PHONY: help install test test-data test-slow test-portable mutate lint bench list-figures reproduce-all \
	clean-results check-all docs data notebook $(addprefix reproduce-figure-,$(FIGURES)) $(addprefix check-figure-,$(FIGURES)) \
	$(addprefix store-figure-,$(FIGURES))

help: ## List the targets
	@grep -hE '^[a-zA-Z0-9_%-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | awk -F'\t' '{printf "  %-22s %s\n", $$1, $$2}'
	@echo "  reproduce-figure-N     regenerate figure N (N in: $(FIGURES)) and print its claims table"
	@echo "  check-figure-N         check figure N's claims: exit 0 none failed, 1 a claim failed (a finding),"
	@echo "                         2 configuration problem, 3 no results, 4 results damaged (README)"
	@echo "  store-figure-N         copy figure N's results into results/reference (STORE_ARGS='wall_time_s=.. load=..')"
	@echo "Variables: PROFILE=quick|paper (default quick), RESULTS=<dir> (default results)"

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[$(EXTRAS)]'
	@touch $@

install: $(STAMP) ## Create .venv and install the package with its extras (EXTRAS=dev,data,control,bench)

# `make test` in two sessions: the numerics tests as users run XLA; the rest (plumbing: runs,
# files, configs, figures, claims) with LLVM optimisation off, which halves compile time and
# computes the same math. Exit 5 = "no test selected" (e.g. PYTEST_ARGS names one file).
FAST_XLA_FLAGS ?= --xla_backend_optimization_level=0
test: $(STAMP) ## Run the test suite (excludes @slow; TEST_WORKERS=2 pytest-xdist processes)
	XLA_FLAGS="$${XLA_FLAGS:+$$XLA_FLAGS }$(FAST_XLA_FLAGS)" \
	  $(PY) -m pytest -q -m "not slow and not numerics" $(XDIST) $(PYTEST_ARGS) || [ $$? -eq 5 ]
	$(PY) -m pytest -q -m "numerics and not slow" $(XDIST) $(PYTEST_ARGS) || [ $$? -eq 5 ]

# The tests that need a real dataset (marked `data`; each skips, naming the dataset, where it is
# missing).  `make test` runs them too; .ci/run runs `make test` with every dataset hidden, as on
# a fresh machine, then these with the real files.
test-data: $(STAMP) ## Run the tests that need real datasets (after `make data`; a missing one skips)
	$(PY) -m pytest -q -rs -m "data and not slow" $(XDIST) $(PYTEST_ARGS) || [ $$? -eq 5 ]

test-slow: $(STAMP) ## Run only the slow tests (paper-profile checks)
	$(PY) -m pytest -q -m slow $(PYTEST_ARGS)

PORTABLE_ISAS ?= AVX2 SSE4_2
test-portable: $(STAMP) ## The numerical tests again with XLA limited to other CPU instruction sets (PORTABLE_ISAS)
	@set -e; case "$$(uname -m)" in x86_64|amd64) ;; *) echo "test-portable: not an x86 CPU, nothing to restrict"; exit 0;; esac; \
	for isa in $(PORTABLE_ISAS); do \
	  echo "== numerics with XLA_FLAGS=--xla_cpu_max_isa=$$isa"; \
	  XLA_FLAGS="$${XLA_FLAGS:+$$XLA_FLAGS }--xla_cpu_max_isa=$$isa" \
	    $(PY) -m pytest -q -m "numerics and not slow" -p no:cacheprovider $(XDIST) $(PYTEST_ARGS); \
	done

mutate: $(STAMP) ## Apply known ES/PES bugs to a copy; each must fail a fast test (MUTATE_ARGS=--all|--only NAME)
	$(PY) -m tests.mutations $(MUTATE_ARGS)

lint: $(STAMP) ## ruff check
	$(PY) -m ruff check pes experiments scripts tests benchmarks

bench: $(STAMP) ## Benchmarks vs evosax: results/bench/bench.csv + a printed table (BENCH_ARGS=--full ...)
	$(PY) scripts/bench.py $(BENCH_ARGS)

list-figures: $(STAMP) ## Figure number -> experiment -> expected outcome
	@$(PY) -m experiments.figures

# Figure N: its runs (resumable), its post-steps (cached), the merged CSV and the plot, all in
# one call of experiments/reproduce.py (rerunning only redoes what changed).  A figure that
# needs a dataset this machine lacks stops first and points to `make data`.  The claims table
# is printed at the end; a failed claim is a finding, not a failed build (report_only=true:
# exit 0 unless the claims are malformed).  check-figure-N exits 1 on a failure.
$(addprefix reproduce-figure-,$(FIGURES)): reproduce-figure-%: $(STAMP)
	@$(PY) -m experiments.data need figure=figure$* profile=$(PROFILE)
	$(PY) -m experiments.reproduce figure=figure$* profile=$(PROFILE) results_root=$(RESULTS)
	@echo "figure $*: $(RESULTS)/$(PROFILE)/figures/figure$*.png"
	@$(PY) -m experiments.check figure=figure$* profile=$(PROFILE) results_root=$(RESULTS) report_only=true

$(addprefix check-figure-,$(FIGURES)): check-figure-%: $(STAMP)
	@$(PY) -m experiments.check figure=figure$* profile=$(PROFILE) results_root=$(RESULTS)

check-all: $(STAMP) ## Check the claims of every figure with results at PROFILE (docs/claims.md)
	@$(PY) -m experiments.check figure=all profile=$(PROFILE) results_root=$(RESULTS)

$(addprefix store-figure-,$(FIGURES)): store-figure-%: $(STAMP)
	$(PY) -m experiments.docs store figure=figure$* profile=$(PROFILE) results_root=$(RESULTS) $(STORE_ARGS)

docs: $(STAMP) ## Regenerate the claims tables in docs/figures/, README.md and FIGURES.md from results/reference
	$(PY) -m experiments.docs

data: $(STAMP) ## Fetch the datasets this machine can get; exit 0 with a table of what stays unavailable and why
	$(PY) -m experiments.data

FIGURE ?= 2
notebook: ## Open notebooks/figure.ipynb in Jupyter (installs the notebook extra; FIGURE=N PROFILE=...)
	@$(MAKE) --no-print-directory install EXTRAS="$(EXTRAS),notebook"
	PES_FIGURE=figure$(FIGURE) PES_PROFILE=$(PROFILE) $(VENV)/bin/jupyter notebook notebooks/figure.ipynb \
	  $(if $(filter 0,$(shell id -u)),--allow-root) $(NOTEBOOK_ARGS)

reproduce-all: $(addprefix reproduce-figure-,$(FIGURES)) ## Every figure at PROFILE

clean-results: ## Delete results/$(PROFILE) (runs, merged CSVs, figures)
	rm -rf $(RESULTS)/$(PROFILE)
