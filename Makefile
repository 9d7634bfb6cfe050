# Two commands do all the set-up on a fresh machine (see README.md):
#   make demo   - fit the hierarchical models on the built-in CDNOW data, write CLV tables and plots
#   make test   - lint and run the whole test suite (notebooks included, at a small size)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
OUT ?= bayesclv-output

.PHONY: demo test venv lint notebooks clean

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
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache .ruff_cache .hypothesis
