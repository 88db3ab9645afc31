# Shortcuts over ./dev for people who like make.
.PHONY: install fmt lint typecheck test test-pg bench dev

install:
	./dev turbocat version >/dev/null
fmt:
	.venv/bin/ruff format src tests && .venv/bin/ruff check --fix src tests
lint:
	./dev lint
typecheck:
	.venv/bin/mypy
test:
	./dev test
test-pg:
	CI=true ./dev test -m pg
bench:
	./dev turbocat version >/dev/null && .venv/bin/python bench/engine.py $(BENCH_ARGS)
dev:
	./dev serve
