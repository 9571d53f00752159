# The only entry points: CI calls these, the README documents them. Each
# installs what it needs first (hack/deps: one list, says what and why).
SHELL := /bin/bash
CARGO ?= cargo
# One target dir outside the clone for every build (test, demo, e2e, bench,
# release): they reuse each other's work, and a fresh clone starts warm.
export CARGO_TARGET_DIR ?= $(HOME)/.cache/hatchway/target

.PHONY: test fmt-check clippy unit crd-check crds fmt static static-check chart-check

## test: everything that runs without a cluster (format, lints, the static
## sidecar check, the chart's lint and render checks, unit and in-process
## integration tests, generated-file drift)
test: deps-test fmt-check clippy crd-check chart-check static-check unit

## deps-*: install what `make test`, `make demo`, `make e2e` need and this
## machine lacks (hack/deps)
.PHONY: deps-test deps-demo deps-e2e deps-release deps-fuzz preflight
deps-test:
	@hack/deps test
deps-fuzz:
	@hack/deps fuzz
deps-release:
	@hack/deps release
deps-demo:
	@hack/deps demo
deps-e2e:
	@hack/deps test e2e

## preflight: the cluster's fast checks (root, kernel, swap, node IP, ports,
## free disk), before any long build
preflight:
	@e2e/cluster preflight

fmt-check:
	$(CARGO) fmt --all --check

clippy:
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

## crds: regenerate crds/ (and the chart's copy) from the Rust types
crds:
	$(CARGO) run --quiet --locked -p hatchway-api --bin crdgen -- crds/container.yaml
	cp crds/container.yaml charts/hatchway/crds/container.yaml

crd-check:
	@tmp=$$(mktemp) && $(CARGO) run --quiet --locked -p hatchway-api --bin crdgen > $$tmp \
	  && { diff -u crds/container.yaml $$tmp || { echo "crds/container.yaml is stale: run 'make crds' and commit it"; rm -f $$tmp; exit 1; }; }; \
	  rc=$$?; rm -f $$tmp; exit $$rc

## chart-check: helm lint and render checks of charts/hatchway (helm is
## built from its Go module by e2e/cluster, cached)
chart-check:
	bash charts/check.sh "$$(e2e/cluster helm 2>/dev/null)"

## chart-readme: regenerate charts/hatchway/README.md from values.yaml's
## `# --` comments (chart-check fails when it is stale)
.PHONY: chart-readme
chart-readme: deps-test
	/usr/bin/python3 charts/readme.py

# Doc tests first; nextest last, so the run ends with its summary line.
unit:
	$(CARGO) test --workspace --doc --locked
	$(CARGO) nextest run --workspace --exclude hatchway-e2e --locked --no-fail-fast

fmt:
	$(CARGO) fmt --all

## fuzz: every cargo-fuzz target (fuzz/, docs/fuzzing.md) for FUZZ_SECONDS
## each (default 60; CI runs FUZZ_SECONDS=10), nightly with
## AddressSanitizer; fails if any target finds a crash. FUZZ_TARGETS
## narrows it to some targets.
.PHONY: fuzz
FUZZ_SECONDS ?= 60
fuzz: deps-fuzz
	FUZZ_SECONDS=$(FUZZ_SECONDS) hack/fuzz $(FUZZ_TARGETS)

# The sidecar must run in any image (it is the workload's PID 1): a static
# binary, built with its own target dir so the flag does not rebuild the
# normal one. The operator is built the same way for its FROM-scratch
# image, with the kubectl plugin (the release archive's binary) and the e2e
# workload image's test tools (ws-echo, attack). One cargo run, one package
# set, one profile for every target that needs them (test's static check,
# images, demo, e2e, release): each reuses what another built, and what is
# tested is what ships. PROFILE=dev builds debug binaries instead (a quicker
# edit-build cycle while working on e2e; the release target ignores it).
TARGET_TRIPLE := x86_64-unknown-linux-gnu
PROFILE ?= release
STATIC_TARGET_DIR ?= $(CARGO_TARGET_DIR)/static
STATIC_PROFILE_DIR = $(if $(filter dev,$(PROFILE)),debug,$(PROFILE))
STATIC_OUT = $(STATIC_TARGET_DIR)/$(TARGET_TRIPLE)/$(STATIC_PROFILE_DIR)
STATIC_PACKAGES := -p hatchway-sidecar -p hatchway-operator -p kubectl-hatch -p hatchway-e2e
static:
	RUSTFLAGS='-C target-feature=+crt-static' $(CARGO) build --locked --bins $(STATIC_PACKAGES) \
	  --profile $(PROFILE) --target $(TARGET_TRIPLE) --target-dir $(STATIC_TARGET_DIR)

## release: dist/ — the operator and sidecar images as OCI archives, the
## packaged chart, the static kubectl-hatch archive and its krew manifest,
## SHA256SUMS (hack/release; docs/install.md)
.PHONY: release push
release: PROFILE = release
release: deps-release static
	HATCHWAY_PROFILE_DIR=$(STATIC_PROFILE_DIR) hack/release

## push: the images in dist/ to any OCI registry: make push
## REGISTRY=host[:port][/path] (PUSH_TLS_VERIFY=false for plain HTTP)
push: deps-release
	REGISTRY='$(REGISTRY)' hack/push

## static-check: the static sidecar has no dynamic dependencies and runs,
## as itself and as the shim, in an empty root without libc
static-check: static
	sidecar/tests/static-check.sh $(STATIC_OUT)/hatchway-sidecar

## images: the operator and sidecar images (operator/Dockerfile,
## sidecar/Dockerfile) built with buildah from the static binaries and
## imported into the e2e cluster's containerd (as localhost/hatchway/NAME:e2e)
.PHONY: images demo
images: static cluster-up
	HATCHWAY_PROFILE_DIR=$(STATIC_PROFILE_DIR) e2e/cluster images

## demo: the main job on a local cluster: the e2e cluster (or, with
## HATCHWAY_USE_CURRENT_CLUSTER=1, the current kubeconfig's), the images,
## `helm install`, a sample Container, and the commands to try next. Release
## builds: what ships.
demo: deps-demo preflight static
	HATCHWAY_PROFILE_DIR=$(STATIC_PROFILE_DIR) e2e/demo

## bench: Hatchway beside socat, stunnel, OpenSSH, kubectl port-forward and
## nginx on this machine (bench/README.md): installs the tools, installs the
## chart as `make demo` does (the on-cluster case), builds with the release
## profile the images ship, writes bench/results/<date>.{md,json,png}
.PHONY: bench
BENCH_DIR := $(or $(CARGO_TARGET_DIR),target)/release
bench: deps-demo preflight static cluster-up
	bench/install-tools
	HATCHWAY_PROFILE_DIR=$(STATIC_PROFILE_DIR) e2e/demo
	$(CARGO) build --locked --release -p hatchway-bench -p kubectl-hatch -p hatchway-sidecar
	eval "$$(e2e/cluster env)" && $(BENCH_DIR)/hatchway-bench run --out bench/results $(BENCH_ARGS)
	/usr/bin/python3 bench/chart.py bench/results/$$(date +%Y-%m-%d).json

## e2e: start (or reuse) the single-node e2e cluster (e2e/cluster up), then
## run the end-to-end suite against it. The cluster stays up for the next
## run; `make cluster-down` stops it. nextest's summary is the last line.
.PHONY: e2e cluster-up cluster-down cluster-status
e2e: deps-e2e preflight static cluster-up
	$(CARGO) build --locked -p kubectl-hatch
	eval "$$(e2e/cluster env)" && HATCHWAY_PROFILE_DIR=$(STATIC_PROFILE_DIR) $(CARGO) nextest run -p hatchway-e2e --locked --no-fail-fast

## chaos: faults injected into the e2e cluster while users' traffic flows
## (e2e/tests/chaos.rs, docs/chaos.md): replicas killed, the API server and
## etcd stopped, the sidecar killed, a network cut, DNS down, the leader
## partitioned. Writes e2e/results/DATE-chaos.md; HATCHWAY_CHAOS_CASES=a,b
## runs only those cases. About 20 minutes.
.PHONY: chaos
chaos: deps-e2e preflight static cluster-up
	$(CARGO) build --locked -p kubectl-hatch
	eval "$$(e2e/cluster env)" && HATCHWAY_PROFILE_DIR=$(STATIC_PROFILE_DIR) $(CARGO) nextest run -p hatchway-e2e --locked --no-capture --run-ignored only -E 'binary(chaos)'

## load: the e2e cluster under load (e2e/tests/load.rs, docs/chaos.md): 200
## shells, 500 port-forward connections and 1000 web-app connections at
## once, 1000 Containers to reconcile. Writes e2e/results/DATE-load.md.
.PHONY: load
load: deps-e2e preflight static cluster-up
	$(CARGO) build --locked -p kubectl-hatch
	eval "$$(e2e/cluster env)" && HATCHWAY_PROFILE_DIR=$(STATIC_PROFILE_DIR) $(CARGO) nextest run -p hatchway-e2e --locked --no-capture --run-ignored only -E 'binary(load)'

## screenshots: the web page's e2e test, its screenshots written to
## docs/web (the pictures docs/web.md shows)
.PHONY: screenshots
screenshots: deps-e2e preflight static cluster-up
	$(CARGO) build --locked -p kubectl-hatch
	eval "$$(e2e/cluster env)" && HATCHWAY_SCREENSHOTS=$(CURDIR)/docs/web HATCHWAY_PROFILE_DIR=$(STATIC_PROFILE_DIR) $(CARGO) nextest run -p hatchway-e2e --locked -E 'binary(web)'

cluster-up:
	HATCHWAY_PROFILE_DIR=$(STATIC_PROFILE_DIR) e2e/cluster up

cluster-down:
	e2e/cluster down

cluster-status:
	e2e/cluster status
