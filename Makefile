# Two entry points (README): `make demo` and `make test`. Everything else is a step they use.
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

INTEROP := .venv-interop

.PHONY: deps interop-venv test test-quick test-slow lint demo bench clean

deps: $(STAMP)

# An independent COSE implementation for the interop tests: pycose needs cbor2 < 6, so it
# lives in its own venv (0.9.dev8 is the version the package index serves here).
interop-venv: $(INTEROP)/.installed

$(INTEROP)/.installed:
	$(PY) -m venv $(INTEROP)
	$(INTEROP)/bin/pip install -q "cose==0.9.dev8" "cbor2>=5.4,<6"
	touch $@

$(STAMP): setup.py pyproject.toml scripts/install-system-deps.sh
	bash scripts/install-system-deps.sh
	$(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -e '.[test]'
	touch $(STAMP)

# Quick tests first, then the slow fault/soak/end-to-end ones (marker `slow`).
test: deps interop-venv
	$(VPY) -m pytest -q -m "not slow" -p no:cacheprovider
	$(VPY) -m pytest -q -m slow -p no:cacheprovider

test-quick: deps interop-venv
	$(VPY) -m pytest -q -m "not slow" -p no:cacheprovider

lint: deps
	$(VENV)/bin/ruff check agent buffer drivers receiver tests bench
	$(VENV)/bin/mypy

demo: deps
	$(VPY) -m agent.demo

bench: deps
	$(VPY) -m bench.bench_backbone all
	$(VPY) -m bench.bench_ingest --compare-fastapi --breakdown
	$(VPY) bench/bench_serial.py all --n 300

clean:
	rm -rf $(VENV) $(INTEROP) demo-run
