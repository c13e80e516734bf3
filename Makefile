# Two commands for a newcomer: `make run` and `make test`. Everything else is a helper.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# `make run PORT=8080 SANDBOX_PORT=8081`: the service's port (BIND, when given, sets the
# whole address instead) and the demo sandbox's.
PORT ?= 8000
BIND ?= 127.0.0.1:$(PORT)
SANDBOX_PORT ?= 8001

.PHONY: run test test-quick lint format bench system-deps clean

# Installing says one line and then nothing unless something goes wrong, so that what
# `make run` prints first is the demo's banner.
$(BIN)/python:
	@bash scripts/system-deps.sh venv
	@echo "make: creating the virtualenv $(VENV)"
	@$(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --upgrade pip

# Re-installs only when the dependencies change.
$(VENV)/.installed: $(BIN)/python setup.cfg pyproject.toml
	@echo "make: installing wallet-proxy into $(VENV)"
	@$(BIN)/python -m pip install --quiet -e .
	@touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	@echo "make: installing the test dependencies into $(VENV)"
	@$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $@

# With no SESSIONM_CONNECT_URL, the SessionM sandbox starts too and the demo
# credentials are used; with it, the real configuration must be complete.
run: $(VENV)/.installed
	@$(BIN)/wallet-proxy serve --bind $(BIND) $(if $(SESSIONM_CONNECT_URL),,--sandbox --sandbox-port $(SANDBOX_PORT))

system-deps:
	bash scripts/system-deps.sh

test: system-deps $(VENV)/.installed-test
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The loop while working: every test but those marked slow (gunicorn, containers, nginx,
# several processes) or browser (setup.cfg). `make test`, what CI and the README run,
# runs them all.
test-quick: system-deps $(VENV)/.installed-test
	$(BIN)/python -m pytest -m "not slow and not browser" $(PYTEST_ARGS)

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(VENV)/.installed-test
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: system-deps $(VENV)/.installed-test
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache tests/artifacts

# The architecture picture, from its source (Graphviz: scripts/system-deps.sh installs it).
docs/architecture.svg: docs/architecture.dot
	dot -Tsvg $< -o $@
