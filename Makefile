# FerroLB developer entry points. `make test` is what CI runs (.ci/run).
SHELL := /usr/bin/env bash
CARGO ?= cargo

.PHONY: test check fmt-check clippy generated-check generate unit-test netns-test

## test: every check and every test, lane by lane: check, unit-test, olm-check, netns-test,
## testbed-test
## (tests/README.md, "Test lanes")
test: check unit-test olm-check netns-test testbed-test

## check: static checks that need no cluster
check: fmt-check clippy generated-check

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

## generate: regenerate every generated file from the Rust code: the CRD, the plain manifests
## under config/, the OLM bundle (bundle/, bundle.Dockerfile) and the catalog (catalog/)
generate:
	$(CARGO) run --locked --quiet -p ferrolb-api --bin ferrolb-crdgen -- --out config/crd/bases
	rm -rf bundle catalog
	$(CARGO) run --locked --quiet -p ferrolb-operator --bin ferrolb-manifestgen -- --out .

## bundle: the OLM bundle and the catalog (part of generate; `make olm-check` validates them)
.PHONY: bundle olm-check
bundle: generate

## generated-check: fail when committed generated files differ from what the code generates
## (a changed file, a missing one, or one under bundle/ or catalog/ the code no longer makes)
generated-check:
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	$(CARGO) run --locked --quiet -p ferrolb-api --bin ferrolb-crdgen -- --out "$$tmp" && \
	if ! diff -ru config/crd/bases "$$tmp"; then \
	  echo "config/crd/bases is stale: run 'make generate' and commit the result" >&2; exit 1; \
	fi && \
	$(CARGO) run --locked --quiet -p ferrolb-operator --bin ferrolb-manifestgen -- --out "$$tmp/root" && \
	for f in $$($(CARGO) run --locked --quiet -p ferrolb-operator --bin ferrolb-manifestgen); do \
	  if ! diff -u "$$f" "$$tmp/root/$$f"; then \
	    echo "$$f is stale: run 'make generate' and commit the result" >&2; exit 1; \
	  fi; \
	done && \
	for d in bundle catalog; do \
	  if ! diff -r "$$d" "$$tmp/root/$$d"; then \
	    echo "$$d/ is stale: run 'make generate' and commit the result" >&2; exit 1; \
	  fi; \
	done

## olm-check: the bundle and the catalog through the real OLM tools, built from the Go module
## proxy at pinned versions (tests/testbed/build-olm.sh, cached in /var/cache/ferrolb-testbed):
## `operator-sdk bundle validate` with the operatorframework suite, and `opm validate`
olm-check:
	bash tests/testbed/olm-check.sh

## unit-test: unit and property tests; need no root, no network and no cluster (any user)
unit-test:
	$(CARGO) test --workspace --locked

## netns-test: the tests that need root, network namespaces, arping and ndisc6 (deps installs
## them) but no cluster: they are #[ignore = "needs root and network namespaces: ..."] in
## speaker/tests/l2_netns.rs, speaker/tests/bgp_netns.rs and speaker/tests/bfd_netns.rs (these
## two also need FRR)
netns-test: deps
	$(CARGO) test --workspace --locked --test l2_netns --test bgp_netns --test bfd_netns -- --ignored

# The test lanes select their test targets from the whole workspace (`--workspace --test NAME`)
# rather than one package (`-p`): cargo unifies features over the packages it builds, so a `-p`
# build differs from `cargo test --workspace`'s and would compile the workspace crates again.
TESTBED_TESTS := $(foreach t,$(sort $(basename $(notdir $(wildcard tests/tests/*.rs)))),--test $(t))

## testbed-up / testbed-down / testbed-status: a real cluster on this machine (tests/README.md)
.PHONY: deps testbed-up testbed-down testbed-status testbed-test demo
## deps: Debian packages and the control plane the testbed needs (idempotent, quick when present)
deps:
	bash tests/testbed/install-deps.sh

## image: the images the testbed's nodes run, built offline FROM scratch with buildah (root):
## ghcr.io/ferrolb/ferrolb:vVERSION (the Dockerfile's final stage, from static host-built binaries),
## ferrolb-testbed/{echo,pause,busybox}:v1 and operator-sdk's scorecard-test, as OCI archives in
## /var/cache/ferrolb-testbed/images (tests/testbed/images.sh; unchanged images are not rebuilt).
## TESTBED_PROFILE=release builds FerroLB's binaries with the release profile (the size the docs give)
.PHONY: image
image:
	@out=$$(CARGO="$(CARGO)" bash tests/testbed/images.sh) && out=$$(tail -n1 <<<"$$out") && \
	while read -r file name; do \
	  printf '%-32s %6s  %s\n' "$$name" "$$(du -h "$$out/$$file" | cut -f1)" "$$out/$$file"; \
	done <"$$out/images.txt"

testbed-up: deps
	bash tests/testbed/testbed.sh up

## demo: the testbed with FerroLB installed from config/ and a Service whose IP answers
demo: testbed-up
	bash tests/testbed/demo.sh manifests

## demo-olm: the same, with FerroLB installed through OLM v0 (a CatalogSource serving catalog/,
## an OperatorGroup and a Subscription), as from OperatorHub
.PHONY: demo-olm
demo-olm: testbed-up
	bash tests/testbed/demo.sh olm

## demo-bgp: the same, with the Service's IP announced over BGP by every node to FRR, BIRD and
## GoBGP, and curled from the client through FRR
.PHONY: demo-bgp
demo-bgp: testbed-up
	bash tests/testbed/demo.sh bgp

## fuzz: every fuzz target of fuzz/ (cargo-fuzz, nightly toolchain: the BGP codec and session,
## the liveness datagrams, ARP/NDP frames, configs) for FUZZ_TIME seconds each (default 60; the
## BGP issue asks for 600); corpus and any crash in /var/cache/ferrolb/fuzz-corpus/TARGET.
## Not part of `make test`.
FUZZ_TIME ?= 60
FUZZ_TARGETS := bgp_wire bgp_session membership_wire l2_packet config bfd_packet
FUZZ_DIR := /var/cache/ferrolb/fuzz-corpus
.PHONY: fuzz
fuzz:
	@command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
	cd fuzz && for t in $(FUZZ_TARGETS); do \
	  mkdir -p $(FUZZ_DIR)/$$t && \
	  CARGO_TARGET_DIR=/var/cache/ferrolb/fuzz-target cargo +nightly fuzz run -O $$t $(FUZZ_DIR)/$$t -- \
	    -max_total_time=$(FUZZ_TIME) -artifact_prefix=$(FUZZ_DIR)/$$t-crash- || exit 1; \
	done

## scorecard: operator-sdk scorecard (the basic and OLM suites) on the testbed; testbed-test
## runs it too (tests/tests/olm.rs)
.PHONY: scorecard
scorecard: testbed-up
	bash tests/testbed/olm-check.sh scorecard

testbed-down:
	bash tests/testbed/testbed.sh down

testbed-status:
	bash tests/testbed/testbed.sh status

## testbed-test: bring the testbed up, run the tests that need it (the #[ignore = "needs testbed"]
## tests of tests/tests/*.rs only, not netns-test's), always tear it down
testbed-test: deps
	@bash tests/testbed/testbed.sh up || { bash tests/testbed/testbed.sh save-logs; bash tests/testbed/testbed.sh down; exit 1; }; \
	set -a; . .testbed/env; set +a; \
	$(CARGO) test --workspace --locked --no-fail-fast $(TESTBED_TESTS) -- --ignored --test-threads=1; rc=$$?; \
	if [ $$rc -ne 0 ]; then bash tests/testbed/testbed.sh status || true; bash tests/testbed/testbed.sh save-logs || true; fi; \
	bash tests/testbed/testbed.sh down || rc=1; \
	exit $$rc
