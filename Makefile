# PES reproduction suite. `make help` lists the targets.
SHELL := /bin/bash
PROFILE ?= quick
RESULTS ?= results
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
comma := ,
FIGURES := $(patsubst configs/figure/figure%.yaml,%,$(wildcard configs/figure/figure*.yaml))
PYTEST_ARGS ?=
TEST_WORKERS ?= 2
XDIST := -n $(TEST_WORKERS) --dist loadfile

.DEFAULT_GOAL := help
.PHONY: help install test test-integration test-data test-slow test-portable mutate lint bench list-figures reproduce-all clean-results \
	check-all docs data notebook release-check wheel-smoke api-docs $(addprefix reproduce-figure-,$(FIGURES)) \
	$(addprefix check-figure-,$(FIGURES)) $(addprefix compare-figure-,$(FIGURES)) $(addprefix store-figure-,$(FIGURES))
.SECONDEXPANSION:

# What each target installs into .venv (the extras are listed in pyproject.toml).  The core
# install (`pip install pes-repro`: jax, optax, numpy) is the library alone; `suite` adds what
# experiments/ needs.  A figure installs only the extras it uses: figures 2, 3 and 9 need no
# TensorFlow, TFDS or MuJoCo.  A figure missing from this map gets suite, data and control.
ALL_EXTRAS := suite,data,control,bench,sweep,notebook,dev
EXTRAS ?= $(ALL_EXTRAS)
TEST_EXTRAS := suite,data,control,bench,sweep,dev
FIGURE_EXTRAS_2 := suite
FIGURE_EXTRAS_3 := suite
FIGURE_EXTRAS_4 := suite,data
FIGURE_EXTRAS_5 := suite,data
FIGURE_EXTRAS_6 := suite,data
FIGURE_EXTRAS_7 := suite,data
FIGURE_EXTRAS_8 := suite,control
FIGURE_EXTRAS_9 := suite
FIGURE_EXTRAS_10 := suite,data,control
figure_extras = $(or $(FIGURE_EXTRAS_$(1)),suite$(comma)data$(comma)control)
# $(call env,EXTRAS): the stamp of a .venv that holds the package with those extras
env = $(VENV)/.extras-$(subst $(comma),-,$(1))
# A .venv installed for another checkout (this folder copied or moved, a venv shared between
# clones) would import that checkout's code: its stamps are dropped, so it is installed again here.
ifneq ($(wildcard $(VENV)/.extra-core),)
ifneq ($(strip $(shell cat $(VENV)/lib/python*/site-packages/pes-repro-checkout.pth 2>/dev/null)),$(CURDIR))
$(info $(VENV) was installed for another checkout; installing it again for $(CURDIR))
$(shell rm -f $(VENV)/.extra-* $(VENV)/.extras-*)
endif
endif

help: ## List the targets
	@grep -hE '^[a-zA-Z0-9_%-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | awk -F'\t' '{printf "  %-22s %s\n", $$1, $$2}'
	@echo "  reproduce-figure-N     regenerate figure N (N in: $(FIGURES)) and print its claims table (installs only the extras it needs)"
	@echo "  check-figure-N         check figure N's claims: exit 0 none failed, 1 a claim failed (a finding),"
	@echo "                         2 configuration problem, 3 no results, 4 results damaged (README)"
	@echo "  compare-figure-N       compare figure N's results with its stored reference, value by value: exit 0 every"
	@echo "                         stored value reproduced, 1 some differ (a finding), 2, 3, 4 as check (COMPARE_ARGS='against=<folder>')"
	@echo "  store-figure-N         copy figure N's results into results/reference (STORE_ARGS='wall_time_s=.. load=..')"
	@echo "Variables: PROFILE=quick|paper|paper_fashion|paper_regime (default quick), RESULTS=<dir> (default results),"
	@echo "  JOBS=k (parallel jobs per figure; default 1, reproduce-all 2 for figures $(PARALLEL_FIGURES)), LAUNCH_ARGS='hydra/launcher=... launch....'"

# One stamp per set of extras; each extra is installed once (its own stamp, .extra-NAME), all
# missing ones in one pip call; everything again when pyproject.toml changes.  The checkout goes
# on the environment's path (a .pth file), so `experiments` imports from any folder: the wheel
# holds the library only.
$(VENV)/.extras-%: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@need=; for e in core $(subst -, ,$*); do [ $(VENV)/.extra-$$e -nt pyproject.toml ] || need="$$need $$e"; done; \
	if [ -n "$$need" ]; then \
	  extras=$$(echo $$need | tr ' ' '\n' | grep -vx core | paste -sd, -); \
	  echo "$(PY) -m pip install --quiet -e '.$${extras:+[$$extras]}'"; \
	  $(PY) -m pip install --quiet -e ".$${extras:+[$$extras]}" && \
	  $(PY) -c 'import pathlib, sysconfig; pathlib.Path(sysconfig.get_paths()["purelib"], "pes-repro-checkout.pth").write_text("$(CURDIR)\n")' && \
	  for e in $$need; do touch $(VENV)/.extra-$$e; done; \
	fi
	@touch $@

install: $(call env,$(EXTRAS)) ## Create .venv and install the package with extras (EXTRAS=..., default all but sweep)

# `make test` in two sessions: the numerics tests as users run XLA; the rest (plumbing: runs,
# files, configs, figures, claims) with LLVM optimisation off, which halves compile time and
# computes the same math. Exit 5 = "no test selected" (e.g. PYTEST_ARGS names one file).
FAST_XLA_FLAGS ?= --xla_backend_optimization_level=0
test: $(call env,$(TEST_EXTRAS)) ## Run the fast test suite (excludes @slow and @integration; TEST_WORKERS=2 pytest-xdist processes)
	XLA_FLAGS="$${XLA_FLAGS:+$$XLA_FLAGS }$(FAST_XLA_FLAGS)" \
	  $(PY) -m pytest -q -m "not slow and not integration and not numerics" $(XDIST) $(PYTEST_ARGS) || [ $$? -eq 5 ]
	$(PY) -m pytest -q -m "numerics and not slow and not integration" $(XDIST) $(PYTEST_ARGS) || [ $$? -eq 5 ]

# Whole figures, launched jobs, emulated multi-device runs and task-scale models: minutes each, so
# outside the fast suite; .ci/run runs them after `make test`, in the same two sessions.
test-integration: $(call env,$(TEST_EXTRAS)) ## Run the integration tests (whole figures, jobs, multi-device)
	XLA_FLAGS="$${XLA_FLAGS:+$$XLA_FLAGS }$(FAST_XLA_FLAGS)" \
	  $(PY) -m pytest -q -m "integration and not slow and not numerics" $(XDIST) $(PYTEST_ARGS) || [ $$? -eq 5 ]
	$(PY) -m pytest -q -m "integration and numerics and not slow" $(XDIST) $(PYTEST_ARGS) || [ $$? -eq 5 ]

# The tests that need a real dataset (marked `data`; each skips, naming the dataset, where it is
# missing).  `make test` runs them too; .ci/run runs `make test` with every dataset hidden, as on
# a fresh machine, then these with the real files.
test-data: $(call env,$(TEST_EXTRAS)) ## Run the tests that need real datasets (after `make data`; a missing one skips)
	$(PY) -m pytest -q -rs -m "data and not slow" $(XDIST) $(PYTEST_ARGS) || [ $$? -eq 5 ]

test-slow: $(call env,$(TEST_EXTRAS)) ## Run only the slow tests (paper-profile checks)
	$(PY) -m pytest -q -m slow $(PYTEST_ARGS)

PORTABLE_ISAS ?= AVX2 SSE4_2
test-portable: $(call env,$(TEST_EXTRAS)) ## The numerical tests again with XLA limited to other CPU instruction sets (PORTABLE_ISAS)
	@set -e; case "$$(uname -m)" in x86_64|amd64) ;; *) echo "test-portable: not an x86 CPU, nothing to restrict"; exit 0;; esac; \
	for isa in $(PORTABLE_ISAS); do \
	  echo "== numerics with XLA_FLAGS=--xla_cpu_max_isa=$$isa"; \
	  XLA_FLAGS="$${XLA_FLAGS:+$$XLA_FLAGS }--xla_cpu_max_isa=$$isa" \
	    $(PY) -m pytest -q -m "numerics and not slow" -p no:cacheprovider $(XDIST) $(PYTEST_ARGS); \
	done

mutate: $(call env,$(TEST_EXTRAS)) ## Apply known ES/PES bugs to a copy; each must fail a fast test (MUTATE_ARGS=--all|--only NAME)
	$(PY) -m tests.mutations $(MUTATE_ARGS)

lint: $(call env,dev) ## ruff check
	$(PY) -m ruff check pes experiments scripts tests benchmarks

bench: $(call env,suite$(comma)bench) ## Benchmarks vs evosax: results/bench/bench.csv + a printed table (BENCH_ARGS=--full ...)
	$(PY) benchmarks/bench.py $(BENCH_ARGS)

list-figures: $(call env,suite) ## Figure number -> experiment -> expected outcome
	@$(PY) -m experiments.figures

# Figure N: its runs (resumable), its post-steps (cached), the merged CSV and the plot, all in
# one call of experiments/reproduce.py (rerunning only redoes what changed).  A figure that
# needs a dataset this machine lacks stops first and points to `make data`.  The claims table
# is printed at the end; a failed claim is a finding, not a failed build (report_only=true:
# exit 0 unless the claims are malformed).  check-figure-N exits 1 on a failure.
# JOBS=k (k > 1): the figure's runs and post-step parts as k parallel jobs (Hydra's joblib
# launcher; experiments/launch.py, docs/cluster.md); the merged table is the same.  With
# LAUNCH_ARGS=hydra/launcher=submitit_local (or _slurm), JOBS=k is k workers of that launcher.
# The sweep extra is installed when JOBS or LAUNCH_ARGS is set.
$(addprefix reproduce-figure-,$(FIGURES)): reproduce-figure-%: $$(call env,$$(call figure_extras,$$*)$$(if $$(JOBS)$$(LAUNCH_ARGS),$$(comma)sweep))
	@$(PY) -m experiments.data need figure=figure$* profile=$(PROFILE)
	$(PY) -m experiments.reproduce figure=figure$* profile=$(PROFILE) results_root=$(RESULTS) \
	  $(if $(or $(JOBS),$(ALL_JOBS_$*)),jobs=$(or $(JOBS),$(ALL_JOBS_$*))) $(LAUNCH_ARGS)
	@echo "figure $*: $(RESULTS)/$(PROFILE)/figures/figure$*.png"
	@$(PY) -m experiments.check figure=figure$* profile=$(PROFILE) results_root=$(RESULTS) report_only=true

$(addprefix check-figure-,$(FIGURES)): check-figure-%: $(call env,suite)
	@$(PY) -m experiments.check figure=figure$* profile=$(PROFILE) results_root=$(RESULTS)

check-all: $(call env,suite) ## Check the claims of every figure with results at PROFILE (docs/claims.md)
	@$(PY) -m experiments.check figure=all profile=$(PROFILE) results_root=$(RESULTS)

$(addprefix compare-figure-,$(FIGURES)): compare-figure-%: $(call env,suite)
	@$(PY) -m experiments.compare figure=figure$* profile=$(PROFILE) results_root=$(RESULTS) $(COMPARE_ARGS)

$(addprefix store-figure-,$(FIGURES)): store-figure-%: $(call env,suite)
	$(PY) -m experiments.docs store figure=figure$* profile=$(PROFILE) results_root=$(RESULTS) $(STORE_ARGS)

docs: $(call env,suite) ## Regenerate the claims tables in docs/figures/, README.md and FIGURES.md from results/reference
	$(PY) -m experiments.docs

data: $(call env,suite$(comma)data) ## Fetch the datasets this machine can get; exit 0 with a table of what stays unavailable and why
	$(PY) -m experiments.data

FIGURE ?= 2
notebook: $(call env,suite$(comma)notebook) ## Open notebooks/figure.ipynb in Jupyter (installs the notebook extra; FIGURE=N PROFILE=...)
	PES_FIGURE=figure$(FIGURE) PES_PROFILE=$(PROFILE) $(VENV)/bin/jupyter notebook notebooks/figure.ipynb \
	  $(if $(filter 0,$(shell id -u)),--allow-root) $(NOTEBOOK_ARGS)

# Two jobs for the figures where two paid on 2 idle cores with the compilation cache (figures
# PARALLEL_FIGURES; docs/cluster.md, Measured), one for the rest (a worker's start-up costs them
# more than it saves).  JOBS=k sets every figure's; JOBS=k where there are more cores or accelerators.
PARALLEL_FIGURES ?= 5 6 7 8 10
reproduce-all: $(call env,suite$(comma)data$(comma)control$(comma)sweep) ## Every figure at PROFILE (JOBS=2 for figures 5, 6, 7, 8, 10 (PARALLEL_FIGURES), else 1; JOBS=k for all)
	$(MAKE) $(addprefix reproduce-figure-,$(FIGURES)) $(if $(JOBS),JOBS=$(JOBS),$(foreach f,$(PARALLEL_FIGURES),ALL_JOBS_$(f)=2))

# Release checks: the wheel and sdist build, pass `twine check`, hold the library and its data
# (not tests, results or experiments/), and carry one version (pes/_version.py, CHANGELOG.md).
DIST ?= dist
release-check: $(call env,dev) ## Build wheel + sdist into dist/, twine check them, check their contents and version
	rm -rf $(DIST) pes_repro.egg-info
	$(PY) -m build --outdir $(DIST) . > $(DIST).log 2>&1 || { cat $(DIST).log; exit 1; }
	@grep -i 'warning' $(DIST).log | grep -v 'byte-compiling is disabled' || true
	$(PY) -m twine check --strict $(DIST)/*
	$(PY) tests/release_check.py $(DIST)

wheel-smoke: release-check ## Install the wheel into a fresh venv with core deps only; README snippet + every estimator
	$(PY) tests/wheel_smoke.py $(DIST)

# API reference (pdoc) of the public names of `pes`; a pdoc warning fails the build.
API_DIR ?= build/api
api-docs: $(call env,suite$(comma)dev) ## Generate the API reference into build/api (pdoc; fails on warnings)
	rm -rf $(API_DIR)
	$(PY) scripts/api_docs.py $(API_DIR)

clean-results: ## Delete results/$(PROFILE) (runs, merged CSVs, figures)
	rm -rf $(RESULTS)/$(PROFILE)
