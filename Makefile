# Vigil's one task runner. Quick start: `make demo`, then `make test`.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
CACHE := $(HOME)/.cache/vigil
export PIP_CACHE_DIR := $(CACHE)/pip
export PIP_DISABLE_PIP_VERSION_CHECK := 1

# Debian packages the tests use for real: PostgreSQL, OpenSSH server, headless Chromium; and
# what the lab builds and boots its guests with: debootstrap, QEMU.
APT_PACKAGES := postgresql openssh-server sshpass chromium fonts-dejavu-core procps iproute2 python3-psutil netcat-openbsd socat debootstrap qemu-system-x86 e2fsprogs

.PHONY: help demo test test-fast lint bench system-deps venv clean

help:
	@echo "make demo   - the paper's case study: a lab VM under QEMU attacked, watched by Vigil"
	@echo "make test   - the whole test suite (SQLite and a throwaway PostgreSQL)"
	@echo "make lint   - ruff and mypy"
	@echo "make bench  - benchmarks (figures and ratios, not pass/fail)"

$(BIN)/vigil: pyproject.toml
	@test -d $(VENV) || $(PY) -m venv $(VENV)
	@echo ">> installing Vigil and its dependencies into $(VENV)"
	@$(BIN)/pip install -q --upgrade pip
	@$(BIN)/pip install -q -e '.[dev]'
	@touch $@

venv: $(BIN)/vigil

system-deps:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "missing Debian packages:$$missing (run as root or install them)"; exit 1; fi; \
	  echo ">> installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

demo: system-deps venv
	@bash scripts/demo.sh

test: system-deps venv
	VIGIL_REQUIRE_PG=1 $(BIN)/pytest -q $(PYTEST_ARGS)

test-fast: venv
	$(BIN)/pytest -q -m "not slow" $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy src/vigil/server src/vigil/protocol src/vigil/lab

bench: system-deps venv
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) .pytest_cache build src/*.egg-info
