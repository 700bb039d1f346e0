# The README's commands. Each bootstraps first, so they work on a fresh machine.
.PHONY: run test demo unit integration bench lint

run:
	./scripts/run.sh

test:
	./scripts/test.sh

demo:
	./scripts/bootstrap.sh && .venv/bin/python -m worker demo

unit:
	./scripts/bootstrap.sh && .venv/bin/python -m pytest tests/unit

integration:
	./scripts/bootstrap.sh && .venv/bin/python -m pytest tests/integration

bench:
	./scripts/bootstrap.sh && .venv/bin/python tests/bench/receiver_bench.py && .venv/bin/python tests/bench/reconcile_bench.py

lint:
	./scripts/bootstrap.sh && .venv/bin/ruff check .
