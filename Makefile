# Every target runs in the project's virtualenv (.venv), which `make venv` creates.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: venv demo test test-unit test-node lint controlplane node image docs docs-check cluster-up cluster-up-node cluster-down clean

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

# Builds (once, then cached in ~/.cache/rightsizer/node and images) the kubelet, kube-proxy, scheduler,
# controller-manager, kubectl and containerd of `rightsizer cluster up --node`, and the sandbox image.
node: venv
	$(BIN)/rightsizer cluster build --node

# localhost/rightsizer:dev from the Dockerfile on a Python base made from Debian packages (buildah, no registry),
# loaded into the running node if there is one.
image: venv
	$(BIN)/rightsizer cluster image

# The README's test command. Pytest's exit code 5 (no tests collected) is a failure here: an empty run proves nothing.
test: venv controlplane node docs-check lint
	$(BIN)/pytest

# The layering (import-linter contracts in pyproject.toml) and the types of the pure core (mypy --strict).
lint: venv
	$(BIN)/lint-imports
	$(BIN)/mypy

test-unit: venv
	$(BIN)/pytest -m "not cluster"

# The operator as a Pod on the single-node cluster (needs root), alone.
test-node: venv controlplane node
	$(BIN)/pytest -m node

docs: venv
	$(BIN)/rightsizer docs --output docs/api-reference.md

docs-check: venv
	$(BIN)/rightsizer docs --check --output docs/api-reference.md

cluster-up: venv
	$(BIN)/rightsizer cluster up --install-crds

cluster-up-node: venv
	$(BIN)/rightsizer cluster up --node --install-crds

cluster-down: venv
	$(BIN)/rightsizer cluster down

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info operator/*.egg-info
