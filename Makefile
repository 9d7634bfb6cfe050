# Two commands do all the set-up on a fresh machine (see README.md):
#   make demo   - fit the hierarchical models on the built-in CDNOW data, write CLV tables and plots
#   make test   - lint and run the whole test suite (notebooks included, at a small size)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
OUT ?= bayesclv-output

# make test runs two pytest workers (CI has 2 cores) and leaves out the `extended` checks
# (each repeats a benchmark or a cheaper test at a larger size); make test-all runs them too.
TEST_WORKERS ?= 2

.PHONY: demo test test-all venv lint notebooks clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

venv: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/bayesclv demo --out $(OUT)

lint: $(VENV)/.installed
	$(PY) -m ruff check .

test: $(VENV)/.installed
	$(PY) -m ruff check .
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m "not extended"

test-all: $(VENV)/.installed
	$(PY) -m ruff check .
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache .ruff_cache .hypothesis
