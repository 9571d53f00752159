# The only entry points: CI calls these, the README documents them.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: test fmt-check clippy unit crd-check crds fmt static static-check

## test: everything that runs without a cluster (format, lints, the static
## sidecar check, unit and in-process integration tests, generated-file drift)
test: fmt-check clippy crd-check static-check unit

fmt-check:
	$(CARGO) fmt --all --check

clippy:
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

## crds: regenerate crds/ from the Rust types
crds:
	$(CARGO) run --quiet --locked -p hatchway-api --bin crdgen -- crds/container.yaml

crd-check:
	@tmp=$$(mktemp) && $(CARGO) run --quiet --locked -p hatchway-api --bin crdgen > $$tmp \
	  && { diff -u crds/container.yaml $$tmp || { echo "crds/container.yaml is stale: run 'make crds' and commit it"; rm -f $$tmp; exit 1; }; }; \
	  rc=$$?; rm -f $$tmp; exit $$rc

# Doc tests first; nextest last, so the run ends with its summary line.
unit:
	$(CARGO) test --workspace --doc --locked
	$(CARGO) nextest run --workspace --exclude hatchway-e2e --locked --no-fail-fast

fmt:
	$(CARGO) fmt --all

# The sidecar must run in any image (it is the workload's PID 1): a static
# binary, built with its own target dir so the flag does not rebuild the
# normal one. Images use it (ops: `make static PROFILE=release`).
TARGET_TRIPLE := x86_64-unknown-linux-gnu
PROFILE ?= dev
STATIC_TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),target)/static
STATIC_OUT := $(STATIC_TARGET_DIR)/$(TARGET_TRIPLE)/$(if $(filter dev,$(PROFILE)),debug,$(PROFILE))
static:
	RUSTFLAGS='-C target-feature=+crt-static' $(CARGO) build --locked -p hatchway-sidecar \
	  --profile $(PROFILE) --target $(TARGET_TRIPLE) --target-dir $(STATIC_TARGET_DIR)

## static-check: the static sidecar has no dynamic dependencies and runs,
## as itself and as the shim, in an empty root without libc
static-check: static
	sidecar/tests/static-check.sh $(STATIC_OUT)/hatchway-sidecar

## e2e: start (or reuse) the single-node e2e cluster (e2e/cluster up), then
## run the end-to-end suite against it. The cluster stays up for the next
## run; `make cluster-down` stops it. nextest's summary is the last line.
.PHONY: e2e cluster-up cluster-down cluster-status
e2e: static cluster-up
	$(CARGO) build --locked -p kubectl-hatch
	eval "$$(e2e/cluster env)" && $(CARGO) nextest run -p hatchway-e2e --locked --no-fail-fast

cluster-up:
	e2e/cluster up

cluster-down:
	e2e/cluster down

cluster-status:
	e2e/cluster status
