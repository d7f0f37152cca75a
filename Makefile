# dropship: the commands a user and CI run. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help
CARGO ?= cargo
# The test bed instance (scripts/testbed.sh); several can run side by side.
TESTBED_ID ?= 0
export TESTBED_ID
TESTBED_INVENTORY := inventory/$(if $(filter 0,$(TESTBED_ID)),testbed,testbed-$(TESTBED_ID))

# make install: where, as the GNU conventions name it (DESTDIR for staged installs).
PREFIX ?= /usr/local
DESTDIR ?=
BINDIR := $(DESTDIR)$(PREFIX)/bin
MANDIR := $(DESTDIR)$(PREFIX)/share/man/man1
BASHDIR := $(DESTDIR)$(PREFIX)/share/bash-completion/completions
ZSHDIR := $(DESTDIR)$(PREFIX)/share/zsh/site-functions
FISHDIR := $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d
RELEASE := target/release/dropship

.PHONY: help build test lint deps testbed-up testbed-down demo push bench man completions install
help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-13s %s\n", $$1, $$2}'

build: ## Build the release binary (target/release/dropship)
	$(CARGO) build --release --locked

man: build ## Man pages from the CLI definitions into target/man (dropship.1, dropship-push.1, ...)
	$(RELEASE) man target/man

completions: build ## Shell completions (bash, zsh, fish) into target/completions
	mkdir -p target/completions
	$(RELEASE) completions bash > target/completions/dropship
	$(RELEASE) completions zsh > target/completions/_dropship
	$(RELEASE) completions fish > target/completions/dropship.fish

install: man completions ## Install the binary, man pages and completions under PREFIX (/usr/local; DESTDIR too)
	install -d $(BINDIR) $(MANDIR) $(BASHDIR) $(ZSHDIR) $(FISHDIR)
	install -m 0755 $(RELEASE) $(BINDIR)/dropship
	install -m 0644 target/man/*.1 $(MANDIR)/
	install -m 0644 target/completions/dropship $(BASHDIR)/dropship
	install -m 0644 target/completions/_dropship $(ZSHDIR)/_dropship
	install -m 0644 target/completions/dropship.fish $(FISHDIR)/dropship.fish

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
