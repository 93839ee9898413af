# The incident register. `make run` and `make test` work on a fresh machine with Python 3.11+.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
FLASK := $(BIN)/flask --app app
CATALOGS := $(wildcard incidents/translations/*/LC_MESSAGES/messages.po)
COMPILED := $(CATALOGS:.po=.mo)

.PHONY: run test check lint typecheck translations extract-messages update-catalogs bench clean

run: $(VENV)/.runtime $(COMPILED)
	$(FLASK) demo prepare
	$(FLASK) run --host 127.0.0.1 --port 5000

test: $(VENV)/.dev $(COMPILED)
	$(BIN)/python -m pytest

check: lint typecheck test

lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.dev
	$(BIN)/mypy

translations: $(COMPILED)

bench: $(VENV)/.dev
	$(BIN)/python bench/seal_report.py

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.runtime: requirements.txt $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt $(VENV)/.runtime
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $@

%.mo: %.po $(VENV)/.runtime
	$(BIN)/pybabel compile --statistics -i $< -o $@

extract-messages: $(VENV)/.runtime
	$(BIN)/pybabel extract -F babel.cfg -k _l -k N_ -k lazy_gettext --no-location \
	  --sort-output --project="incident register" -o incidents/translations/messages.pot .

update-catalogs: extract-messages
	$(BIN)/pybabel update --no-fuzzy-matching -i incidents/translations/messages.pot \
	  -d incidents/translations

clean:
	rm -rf $(VENV) $(COMPILED)
