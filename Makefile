# mysimbdp: `make` lists the targets. Every target sets up what it needs first.
.DEFAULT_GOAL := help
PY := .venv/bin/python
export PYTHONDONTWRITEBYTECODE := 1

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-8s %s\n", $$1, $$2}'

setup: ## install system packages and the Python environment (idempotent)
	@scripts/setup.sh

demo: setup ## bring the platform up and run the demo: two tenants, batch and stream, receipts at the end
	@$(PY) -m mysimbdp up
	@$(PY) scripts/demo.py

test: setup ## bring the platform up and run every test against the real services
	@$(PY) -m pytest -q

up: setup ## start the platform
	@$(PY) -m mysimbdp up

down: ## stop the platform
	@$(PY) -m mysimbdp down

status: ## show each part of the platform
	@$(PY) -m mysimbdp status

bench: setup ## run the benchmarks (figures go to bench/RESULTS.md)
	@$(PY) bench/run_all.py

vendor: ## refresh the dashboard's charting library (uPlot, pinned in dashboard/package.json) from npm
	@scripts/vendor-uplot.sh

lint: setup ## ruff (installed into .venv on first use)
	@test -x .venv/bin/ruff || .venv/bin/pip install -q ruff
	@.venv/bin/ruff check .

.PHONY: help setup demo test up down status bench vendor lint
