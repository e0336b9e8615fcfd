# Every target sets up what it needs in .venv by itself.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The venv with a pip that knows dependency groups (25.1).
BASE := $(VENV)/.base
# The package alone, for the demo; and with the development tools.
DEMO := $(VENV)/.demo
STAMP := $(VENV)/.installed

.PHONY: demo demo-metrics dist test lint typecheck pytest docs docs-check bench bench-quick clean

$(BASE):
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=25.1"
	touch $(BASE)

$(DEMO): pyproject.toml $(BASE)
	$(BIN)/python -m pip install --quiet -e .
	touch $(DEMO)

$(STAMP): pyproject.toml $(BASE)
	$(BIN)/python -m pip install --quiet -e . --group dev
	touch $(STAMP)

# Only what the demo needs: the package (trio and attrs).
demo: $(DEMO)
	$(BIN)/python examples/demo.py

# The second demo: a broker's Prometheus metrics, served on 127.0.0.1.
demo-metrics: $(DEMO)
	$(BIN)/python -m pip install --quiet -e '.[prometheus]'
	$(BIN)/python examples/metrics_dashboard.py --hold 30

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/coverage erase
	$(BIN)/coverage run -m pytest
	$(BIN)/coverage report

docs-check: $(STAMP)
	$(BIN)/sphinx-build -q -n -W --keep-going -b html docs docs/_build/check

docs: $(STAMP)
	$(BIN)/sphinx-build -n -W --keep-going -b html docs docs/_build/html
	@echo "open docs/_build/html/index.html"

test: lint typecheck pytest docs-check

# The sdist and the wheel in dist/, checked as an index would check them.
dist: $(STAMP)
	rm -rf dist
	$(BIN)/python -m build --outdir dist .
	$(BIN)/twine check --strict dist/*

# Not part of `make test`: takes several minutes and measures, it does not check.
# Rewrites bench/results.md and docs/_static/publish-vs-patterns.png.
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet --group bench
	$(BIN)/python bench/run.py

bench-quick: $(STAMP)
	$(BIN)/python -m pip install --quiet --group bench
	$(BIN)/python bench/run.py --quick

clean:
	rm -rf $(VENV) docs/_build .coverage .mypy_cache .pytest_cache .ruff_cache .hypothesis
