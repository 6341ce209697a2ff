# Two entry points (README): `make demo` and `make test`. Everything else is a step they use.
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: deps test test-quick test-slow lint demo bench clean

deps: $(STAMP)

$(STAMP): setup.py pyproject.toml scripts/install-system-deps.sh
	bash scripts/install-system-deps.sh
	$(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -e '.[test]'
	touch $(STAMP)

# Quick tests first, then the slow fault/soak/end-to-end ones (marker `slow`).
test: deps
	$(VPY) -m pytest -q -m "not slow" -p no:cacheprovider
	$(VPY) -m pytest -q -m slow -p no:cacheprovider

test-quick: deps
	$(VPY) -m pytest -q -m "not slow" -p no:cacheprovider

lint: deps
	$(VENV)/bin/ruff check agent buffer drivers receiver tests bench
	$(VENV)/bin/mypy

demo: deps
	$(VPY) -m agent.demo

bench: deps
	$(VPY) -m bench.run_all

clean:
	rm -rf $(VENV) demo-run
