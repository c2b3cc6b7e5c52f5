# aura-ops: every target installs what it needs first (scripts/bootstrap.sh, idempotent).
VENV ?= .venv
PY := $(VENV)/bin/python
SCALE ?=

.PHONY: bootstrap bootstrap-bench test unit integration demo bench bench-quick bench-compare lint clean

bootstrap:
	@AURA_VENV=$(VENV) bash scripts/bootstrap.sh

test: bootstrap
	$(PY) -m pytest -q tests

unit: bootstrap
	$(PY) -m pytest -q tests/unit

integration: bootstrap
	$(PY) -m pytest -q tests/integration

demo: bootstrap
	$(PY) -m aura_ops.dev.demo

# The bench also needs the peers it measures (restic, borg, pgBackRest); the tests do not.
bootstrap-bench: bootstrap
	@bash scripts/bootstrap-bench.sh

# make bench [QUICK=1] [SCALE=pgbench scale]; results in bench-results/<UTC time>.json
bench: bootstrap-bench
	$(PY) -m aura_ops.dev.bench $(if $(QUICK),--quick) $(if $(SCALE),--scale $(SCALE))

bench-quick: bootstrap-bench
	$(PY) -m aura_ops.dev.bench --quick $(if $(SCALE),--scale $(SCALE))

# make bench-compare [OLD=file NEW=file]: each figure new/old (default: the two newest results)
bench-compare: bootstrap
	$(PY) -m aura_ops.dev.bench compare $(OLD) $(NEW)

lint: bootstrap
	$(VENV)/bin/ruff check aura_ops tests
	$(VENV)/bin/ruff format --check aura_ops tests
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .demo .bench .bench.img
