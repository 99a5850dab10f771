.DEFAULT_GOAL := help
PY := .venv/bin/python

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

run: ## set up and serve on 127.0.0.1:8000 (SQLite)
	scripts/run

test: ## every test on SQLite (DATABASE_URL=postgres://... for PostgreSQL)
	scripts/test

lint: ## ruff lint and format check, the import contract
	$(PY) -m ruff check . && $(PY) -m ruff format --check . && .venv/bin/lint-imports

imports: ## the import contract: common <- whatsapp <- messaging <- clinics, dev tools apart
	.venv/bin/lint-imports

typecheck: ## mypy with the Django and DRF plugins
	$(PY) -m mypy

fmt: ## format the code
	$(PY) -m ruff check --fix . && $(PY) -m ruff format .

migrations-check: ## fail if models and migrations differ
	DJANGO_SETTINGS_MODULE=clinics_project.test_settings $(PY) manage.py makemigrations --check --dry-run

fake-meta: ## the fake Meta Graph server (a dev tool) on 127.0.0.1:8765
	$(PY) -m devtools.fake_graph --port 8765

check: ## what CI runs (lint, import contract, mypy, migrations, every test on SQLite and PostgreSQL)
	bash .ci/run

.PHONY: help run test lint imports typecheck fmt migrations-check fake-meta check
