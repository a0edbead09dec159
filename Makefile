# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create .venv and install the package into it (pinned by constraints.txt) when needed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# the demo's run folder (evaluated once, so training and report agree on it)
DEMO_STAMP := $(shell date +%Y%m%d-%H%M%S)
DEMO_RUN ?= runs/demo-$(DEMO_STAMP)

.PHONY: setup demo test test-fast clean

$(STAMP): pyproject.toml setup.py constraints.txt $(wildcard src/noah/csrc/*.c src/noah/csrc/*.h)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -c constraints.txt -e '.[all,test]'
	touch $(STAMP)

setup: $(STAMP)

# train on the built-in digit scenes, then write the run's HTML report and print its path
demo: setup
	$(VENV)/bin/noah train --output $(DEMO_RUN)
	$(VENV)/bin/noah report $(DEMO_RUN)

test: setup
	$(PY) -m pytest

test-fast: setup
	$(PY) -m pytest -m "not slow"

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
