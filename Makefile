# nsai-work: every target installs what it needs (Debian and PyPI packages) on a fresh machine.
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: setup test test-modal lint demo bench schema lock clean

setup: $(STAMP)

$(STAMP): pyproject.toml requirements/constraints.txt scripts/setup.sh
	scripts/setup.sh
	@touch $(STAMP)

## make test: lint, then the whole test suite in a loopback-only network namespace.
test: setup lint
	scripts/in-netns.sh $(VENV)/bin/pytest $(PYTEST_ARGS)

## make test-modal: the Modal suite against a real Modal account, which cannot be reached from
## here (`make test` runs it on work.testing.FakeModal and skips the live variants, saying why).
## Needs NSAI_WORK_MODAL_LIVE=1 and Modal's own credentials (MODAL_TOKEN_ID/MODAL_TOKEN_SECRET or
## ~/.modal.toml); deploys tests/modal_app/app.py first (docs/modal.md).
MODAL_APP ?= $(or $(NSAI_WORK_MODAL_APP),nsai-work-test)
test-modal: setup
	@if [ "$(NSAI_WORK_MODAL_LIVE)" != 1 ]; then \
		echo "make test-modal runs the Modal suite against a real Modal account:"; \
		echo "  NSAI_WORK_MODAL_LIVE=1 make test-modal   (see docs/modal.md)"; exit 2; fi
	PYTHONPATH=. $(VENV)/bin/modal deploy -m tests.modal_app.app --name $(MODAL_APP) \
		$(if $(NSAI_WORK_MODAL_ENVIRONMENT),--env $(NSAI_WORK_MODAL_ENVIRONMENT))
	NSAI_WORK_MODAL_LIVE=1 NSAI_WORK_MODAL_APP=$(MODAL_APP) $(VENV)/bin/pytest -k live -rs $(PYTEST_ARGS) \
		tests/integration/test_modal_backend.py tests/contract/test_modal_contract.py

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

## make demo: a realistic multi-tenant workload on the embedded scheduler, live.
demo: setup
	$(PY) -m nsai_work.demo $(DEMO_ARGS)

## make bench: benchmarks, median of 3 runs; results under bench/results/.
bench: setup
	scripts/in-netns.sh $(PY) -m bench $(BENCH_ARGS)

## make schema: regenerate schema/*.json from the IR types.
schema: setup
	$(PY) -m nsai_work.cli schema --write schema

## make lock: re-pin requirements/constraints.txt (every dependency and build tool) with uv.
lock: setup
	$(PY) -m pip install --quiet --disable-pip-version-check -c requirements/constraints.txt uv
	$(VENV)/bin/uv pip compile pyproject.toml requirements/toolchain.in --all-extras \
		--python-version 3.11 --upgrade --custom-compile-command "make lock" \
		-o requirements/constraints.txt

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis build src/*.egg-info
