# tunelab — set-up and everyday commands. Two commands do everything on a fresh machine:
#   make demo   create .venv, install tunelab (torch pinned to the 2.13.0 CPU build), run the main job
#   make test   the same set-up plus development tools, then lint, type-check and the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# An unpinned torch would download a multi-GB CUDA build; 2.13.0 is the CPU build this machine has on disk.
TORCH_PIN := torch==2.13.0

.PHONY: demo test test-ray test-slow lint venv dev system-deps bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_PIN)
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.dev-installed: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

venv: $(VENV)/.installed
dev: $(VENV)/.dev-installed

demo: venv
	$(BIN)/tunelab demo

# Debian packages the tests use: real Fashion-MNIST, fortunes (quotations by topic: real text to classify),
# Chromium for the report's browser test, a PostgreSQL server for the PostgreSQL study storage (the tests
# start a throwaway one), and iproute2 (`ip`: loopback up in the Ray tests' network namespace). Installed
# when running as root (CI, a fresh container); otherwise the tests that need them skip and say how.
SYSTEM_PACKAGES := dataset-fashion-mnist fortunes chromium postgresql iproute2
system-deps:
	@if [ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] && [ -x /usr/bin/chromium ] \
		&& [ -f /usr/share/games/fortunes/computers ] \
		&& ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 && command -v ip >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SYSTEM_PACKAGES) >/dev/null) \
		|| echo "note: could not install $(SYSTEM_PACKAGES); the tests that need them will be skipped"; \
	else echo "note: run 'sudo apt-get install -y $(SYSTEM_PACKAGES)' to enable every test"; fi

lint: dev
	$(BIN)/ruff check src tests bench examples tools
	$(BIN)/ruff format --check src tests bench examples tools
	$(BIN)/mypy
	$(BIN)/lint-imports

test: dev system-deps lint
	$(BIN)/pytest
	@$(MAKE) --no-print-directory test-ray

# The Ray tests (issue #17: a local multi-node cluster) run in a private network namespace that has only
# loopback, so that nothing Ray opens is reachable from outside; that needs root (CI has it).
test-ray: dev system-deps
	@if command -v ip >/dev/null && unshare -n true 2>/dev/null; then \
		unshare -n sh -c 'ip link set lo up && $(BIN)/pytest -m ray'; \
	else echo "note: the Ray tests (pytest -m ray) need a private network namespace (unshare -n, as root) and ip; skipped"; fi

test-slow: dev system-deps
	$(BIN)/pytest -m slow

bench: venv
	$(BIN)/python bench/train_loop.py
	$(BIN)/python bench/fused.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .mypy_cache .ruff_cache .import_linter_cache
