# Set-up, demo, tests and benchmarks. `make demo` and `make test` are all a fresh machine needs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.advbridge-installed

.PHONY: demo test test-slow lint bench weights install clean

install: $(STAMP)

# build-constraints.txt reaches the isolated builds of sdists (adv-lib's visdom needs setuptools<81 to build).
$(STAMP): pyproject.toml constraints.txt build-constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	PIP_CONSTRAINT=build-constraints.txt $(PY) -m pip install -q -c constraints.txt -e '.[dev,ray,gp,advlib]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/advbridge demo $(DEMO_ARGS)

test: $(STAMP) lint
	$(PY) -m pytest -q -n 2 --dist loadfile -m "not slow" $(PYTEST_ARGS)

# ruff, the import-linter contracts (.importlinter) and mypy (mypy.ini) on the whole package. mypy reads the
# package through a tree of links, because the package-dir mapping (bridge/ -> advbridge.bridge) is not a folder.
TYPECHECK := build/typecheck
lint: $(STAMP)
	$(VENV)/bin/ruff check bridge defenses evaluations tests bench
	$(VENV)/bin/lint-imports
	mkdir -p $(TYPECHECK)/advbridge
	for p in bridge defenses evaluations; do ln -sfn $(CURDIR)/$$p $(TYPECHECK)/advbridge/$$p; done
	cd $(TYPECHECK) && $(abspath $(VENV))/bin/mypy --config-file $(CURDIR)/mypy.ini -p advbridge

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow $(PYTEST_ARGS)

# Re-train the shipped weights (evaluations/weights: one torch thread, deterministic), print their sha256 and
# accuracies and rewrite weights.json. CPU-heavy: tens of minutes on 2 cores.
weights: $(STAMP)
	$(VENV)/bin/advbridge weights $(WEIGHTS_ARGS)

bench: $(STAMP)
	$(PY) bench/bench_bridge.py $(BENCH_ARGS)
	$(PY) bench/bench_defenses.py
	$(PY) bench/bench_invert.py
	$(PY) bench/bench_hardness.py
	$(PY) bench/bench_meanfield.py
	$(PY) bench/bench_ray.py
	$(PY) bench/bench_aa.py
	$(PY) bench/bench_exact.py

clean:
	rm -rf $(VENV) build .mypy_cache .ruff_cache advbridge-demo bench/results.json bench/ray_results.json bench/defense_results.json bench/invert_results.json bench/hardness_results.json bench/meanfield_results.json bench/aa_results.json bench/exact_results.json
