# Every target runs in the project's virtualenv (.venv), which `make venv` creates.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: venv demo test test-unit lint controlplane docs docs-check cluster-up cluster-down clean

venv: $(BIN)/rightsizer

$(BIN)/rightsizer: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

# The README's first command: the fraud use case end to end on this machine (local backend), then cleans up.
# Uses KUBECONFIG's cluster when one answers, otherwise starts (and stops) its own control plane.
demo: venv controlplane
	$(BIN)/rightsizer demo

# Builds (once, then cached in ~/.cache/rightsizer/envtest) the pinned kube-apiserver and etcd.
controlplane: venv
	$(BIN)/rightsizer cluster build

# The README's test command. Pytest's exit code 5 (no tests collected) is a failure here: an empty run proves nothing.
test: venv controlplane docs-check lint
	$(BIN)/pytest

# The layering (import-linter contracts in pyproject.toml) and the types of the pure core (mypy --strict).
lint: venv
	$(BIN)/lint-imports
	$(BIN)/mypy

test-unit: venv
	$(BIN)/pytest -m "not cluster"

docs: venv
	$(BIN)/rightsizer docs --output docs/api-reference.md

docs-check: venv
	$(BIN)/rightsizer docs --check --output docs/api-reference.md

cluster-up: venv
	$(BIN)/rightsizer cluster up --install-crds

cluster-down: venv
	$(BIN)/rightsizer cluster down

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info operator/*.egg-info
