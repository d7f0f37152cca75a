# dropship: the commands a user and CI run. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help
CARGO ?= cargo
# The test bed instance (scripts/testbed.sh); several can run side by side.
TESTBED_ID ?= 0
export TESTBED_ID
TESTBED_INVENTORY := inventory/$(if $(filter 0,$(TESTBED_ID)),testbed,testbed-$(TESTBED_ID))

.PHONY: help build test lint deps testbed-up testbed-down demo push bench
help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-13s %s\n", $$1, $$2}'

build: ## Build the release binary (target/release/dropship)
	$(CARGO) build --release --locked

lint: ## cargo fmt --check and clippy with warnings as errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets --locked -- -D warnings

deps: ## Install the Debian packages and the Python venv (scripts/install-deps.sh; idempotent)
	scripts/install-deps.sh

test: ## Run every test (unit, ansible oracle, end-to-end on the test bed, which it brings up)
	@scripts/install-deps.sh --check 2>/dev/null || scripts/install-deps.sh
	scripts/testbed.sh up
	$(CARGO) test --locked

push: build ## Push images: make push INVENTORY=inventory/x/hosts.ini IMAGES=images.txt [ARGS='-l kube_node']
	@test -n "$(INVENTORY)" -a -n "$(IMAGES)" || { echo "usage: make push INVENTORY=FILE IMAGES=FILE [ARGS=...]" >&2; exit 2; }
	target/release/dropship push -i $(INVENTORY) --images-file $(IMAGES) $(ARGS)

testbed-up: deps ## Bring the test bed up: a bastion, 5 mixed nodes, 2 registries (TESTBED_ID=n for another)
	scripts/testbed.sh up

testbed-down: ## Stop the test bed and remove its namespaces
	scripts/testbed.sh down

demo: testbed-up ## Bring the test bed up and push its images to every node through the bastion
	$(CARGO) run --release --locked -- push -i $(TESTBED_INVENTORY)/hosts.ini --images-file $(TESTBED_INVENTORY)/images.txt

bench: ## Benchmark against Kubespray's download flow and a naive loop (scripts/bench.sh; ~40 min)
	scripts/bench.sh
