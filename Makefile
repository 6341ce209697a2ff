# Two entry points (README): `make demo` and `make test`. Everything else is a step they use.
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

INTEROP := .venv-interop
IPYCAM := .venv-ipycam

.PHONY: deps preflight interop-venv ipycam-venv test test-quick test-slow lint demo deb bench clean

deps: $(STAMP)

# An independent COSE implementation for the interop tests: pycose needs cbor2 < 6, so it
# lives in its own venv (0.9.dev8 is the version the package index serves here).
interop-venv: $(INTEROP)/.installed

# A virtual ONVIF camera (ipycam) for the camera tests, in Debian's Python and its own venv.
ipycam-venv: $(IPYCAM)/.installed

$(IPYCAM)/.installed:
	/usr/bin/python3 -m venv $(IPYCAM)
	$(IPYCAM)/bin/pip install -q "ipycam==1.3.0"
	touch $@

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

# Seconds, not a 40 s camera timeout, when a program or GStreamer element is missing.
preflight: deps
	bash scripts/preflight.sh test

# Preflight, lint and types first, then the quick tests, then the slow fault/soak/end-to-end
# ones (marker `slow`).
test: preflight interop-venv ipycam-venv lint
	$(VPY) -m pytest -q -m "not slow" -p no:cacheprovider
	$(VPY) -m pytest -q -m slow -p no:cacheprovider

test-quick: preflight interop-venv ipycam-venv
	$(VPY) -m pytest -q -m "not slow" -p no:cacheprovider

lint: deps
	$(VENV)/bin/ruff check core wire agent buffer drivers receiver tests bench
	$(VENV)/bin/mypy
	shellcheck scripts/*.sh systemd/*.sh systemd/coopagent-svc systemd/deb/*.sh systemd/deb/maintscripts/*

demo: deps
	bash scripts/preflight.sh demo
	$(VPY) -m agent.demo

# The Debian package, with its own Python environment, into dist/ (see docs/operations.md).
deb: deps
	bash scripts/preflight.sh deb
	bash systemd/deb/build.sh --out dist

bench: deps
	$(VPY) -m bench.bench_backbone all
	$(VPY) -m bench.bench_ingest --compare-fastapi --breakdown
	$(VPY) bench/bench_serial.py all --n 300
	$(VPY) -m bench.bench_camera

clean:
	rm -rf $(VENV) $(INTEROP) $(IPYCAM) demo-run dist
