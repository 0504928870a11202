# django-apiauth: `make demo` serves the example project, `make test` runs everything.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
MANAGE := $(PY) example_project/manage.py
STAMP := $(VENV)/.installed

.PHONY: venv system-deps demo test lint migrations-check bench docs clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev,docs]"
	touch $(STAMP)

# nginx (if installed: `make system-deps`) fronts the demo for mTLS on :8443 and
# connects from 127.0.0.2, the demo's only trusted proxy.
demo: export APIAUTH_TRUSTED_PROXIES = 127.0.0.2/32
demo: venv
	$(MANAGE) migrate --noinput
	$(MANAGE) demo_setup
	$(MANAGE) demo_mtls
	$(MANAGE) runserver 127.0.0.1:8000

lint: venv
	$(VENV)/bin/ruff check .

migrations-check: venv
	DJANGO_SETTINGS_MODULE=tests.settings PYTHONPATH=.:example_project $(PY) -m django makemigrations --check --dry-run django_apiauth

# Debian packages the suite's real peers need (nginx for the mTLS end-to-end
# tests); installs only what is missing, never starts a system service.
system-deps:
	sh scripts/system-deps.sh

test: venv system-deps lint migrations-check
	$(VENV)/bin/pytest

bench: venv
	$(PY) benchmarks/run.py
	$(PY) benchmarks/audit_pages.py
	$(PY) benchmarks/guard_cost.py
	$(PY) benchmarks/instructions.py

docs: venv
	$(VENV)/bin/mkdocs build --strict

clean:
	rm -rf $(VENV) example_project/var site
