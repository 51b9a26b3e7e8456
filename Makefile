# One-command setup and runs. `make experiments` and `make test` create .venv first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
QUICK  ?=
ifneq ($(QUICK),)
RESULTS ?= results-quick
endif
RESULTS ?= results
REPORT  ?= $(RESULTS)/report
PYTEST_ARGS ?=

# QUICK=1 runs every study at reduced size (same shapes, fewer tasks and repeats).
RUN_FLAGS := $(if $(QUICK),--quick,)
# A quick report draws fewer per-trial timelines and only the makespan figure per workload
# (each figure costs about half a second; the quick run has a 3-minute budget).
REPORT_FLAGS := $(if $(QUICK),--max-timelines 4 --figure-kinds makespan sweep_workers,)

README_FIGURES := paired_seed_worst_case_worst_w12_ipp-direct_vs_ipp-lb \
	paired_seed_random_gamma_w12_ipp-direct_vs_ipp-lb makespan_seed_worst_case_worst \
	sweep_tasklen_granularity_uniform_w4 metg predictions

.PHONY: setup test test-fast lint experiments holdout report figures bench bench-analysis \
	readme-figures clean help

help:
	@echo "make experiments   run the default study suite, then the report (RESULTS=DIR, QUICK=1)"
	@echo "make test          lint and run the whole test suite"
	@echo "make test-fast     the tests that start no cluster (under 90 s)"
	@echo "make holdout       configs the simulator never saw: run, then predicted vs measured"
	@echo "make report        report of RESULTS (default results/) into RESULTS/report"
	@echo "make figures       figures only"
	@echo "make bench         harness overhead benchmark (bench-analysis: analysis speed)"
	@echo "make readme-figures  copy the README's figures from RESULTS/report"
	@echo "make setup         create .venv from requirements.lock (done by the others)"

setup: $(STAMP)

# Idempotent: redone only when the lock file or pyproject.toml changes.
$(STAMP): requirements.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

lint: setup
	$(PY) -m ruff check research analysis experiments tests
	$(PY) -m mypy research

test: setup lint
	$(PY) -m pytest $(PYTEST_ARGS)

# The inner loop: every test that starts no cluster and runs no sweep (marker `slow`), < 90 s.
test-fast: setup
	$(PY) -m pytest -m "not slow" -q $(PYTEST_ARGS)

# A study that fails (a scheduler that cannot start here) is recorded as failed trials and shows
# up in the report as "not run"; the suite and the report still complete.
experiments: setup
	$(PY) -m research run experiments/*.toml --out $(RESULTS) $(RUN_FLAGS)
	$(PY) -m research talk-primes --out $(RESULTS)/primes $(RUN_FLAGS) \
		|| echo "talk-primes benchmark failed; its claims will say not run"
	# The report fits the simulator's calibration first (RESULTS/calibration.json), reading the
	# results once for both (`python -m research calibrate` does the fit alone).
	$(PY) -m research report $(RESULTS) --out $(REPORT) $(REPORT_FLAGS) --calibrate

# The simulator's calibration: RESULTS/calibration.json when `make experiments` wrote one.
CALIBRATION ?= $(wildcard $(RESULTS)/calibration.json)

# Configs the simulator never saw (experiments/extra/holdout*.toml: 3, 5, 6 and 8 workers, task
# lengths no calibration study uses), run into HOLDOUT and predicted with CALIBRATION: the full
# run's results/calibration.json when there is one, else the package's shipped calibration.
HOLDOUT ?= results-holdout
holdout: setup
	$(PY) -m research run experiments/extra/holdout*.toml --out $(HOLDOUT)
	$(PY) -m research report $(HOLDOUT) --out $(HOLDOUT)/report \
		$(if $(CALIBRATION),--calibration $(CALIBRATION),)

report: setup
	$(PY) -m research report $(RESULTS) --out $(REPORT) $(REPORT_FLAGS) \
		$(if $(CALIBRATION),--calibration $(CALIBRATION),)

figures: setup
	$(PY) -m research figures $(RESULTS) --out $(REPORT)/figures

bench: setup
	$(PY) -m research bench

bench-analysis: setup
	$(PY) analysis/bench_analysis.py

# The README's figures, copied from a full run's report (run `make experiments` first).
readme-figures:
	mkdir -p docs/figures
	for f in $(README_FIGURES); do cp $(REPORT)/figures/$$f.png docs/figures/; done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
