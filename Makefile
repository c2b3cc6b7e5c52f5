# aura-ops: every target installs what it needs first (scripts/bootstrap.sh, idempotent).
VENV ?= .venv
PY := $(VENV)/bin/python
SCALE ?= 70

.PHONY: bootstrap test unit integration demo bench lint clean

bootstrap:
	@bash scripts/bootstrap.sh

test: bootstrap
	$(PY) -m pytest -q tests

unit: bootstrap
	$(PY) -m pytest -q tests/unit

integration: bootstrap
	$(PY) -m pytest -q tests/integration

demo: bootstrap
	$(PY) -m aura_ops.dev.demo

bench: bootstrap
	$(PY) -m aura_ops.dev.bench --scale $(SCALE)

lint: bootstrap
	$(VENV)/bin/ruff check aura_ops tests
	$(VENV)/bin/ruff format --check aura_ops tests
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .demo .bench
