# mailyard — the two commands a newcomer needs: `make serve` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.installed
DEBIAN_PACKAGES := $(shell grep -v '^\s*\#' tests/debian-packages.txt 2>/dev/null | tr '\n' ' ')

.PHONY: venv serve test test-fast bench lint system-deps clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[test,dev]'
	touch $(STAMP)

venv: $(STAMP)

## Run the whole server on the embedded defaults (data under ./var).
serve: $(STAMP)
	$(VENV)/bin/mailyard serve

## Debian packages the tests drive as real peers (swaks, mbsync, spamc, clamdscan, ...).
system-deps:
	@missing=""; for p in $(DEBIAN_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  guard=""; \
	  if [ ! -e /usr/sbin/policy-rc.d ]; then \
	    printf '#!/bin/sh\n# mailyard make test: do not start the peers we install\nexit 101\n' | $$SUDO tee /usr/sbin/policy-rc.d >/dev/null && \
	    $$SUDO chmod 755 /usr/sbin/policy-rc.d && guard=1; \
	  fi; \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -q && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends $$missing; \
	  status=$$?; \
	  [ -z "$$guard" ] || $$SUDO rm -f /usr/sbin/policy-rc.d; \
	  exit $$status; \
	fi

test: $(STAMP) system-deps
	$(VENV)/bin/pytest -q -p no:cacheprovider

test-fast: $(STAMP)
	$(VENV)/bin/pytest -q -x -m 'not slow'

bench: $(STAMP) system-deps
	$(PY) bench/run.py $(BENCH)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests

clean:
	rm -rf $(VENV) var build *.egg-info
