# FerroLB developer entry points. `make test` is what CI runs (.ci/run).
SHELL := /usr/bin/env bash
CARGO ?= cargo

.PHONY: test check fmt-check clippy generated-check generate unit-test

## test: every check and every test (fmt, clippy, generated files, unit and testbed tests)
test: check unit-test

## check: static checks that need no cluster
check: fmt-check clippy generated-check

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

## generate: regenerate the CRD (and, later, the bundle) from the Rust types
generate:
	$(CARGO) run --locked --quiet -p ferrolb-api --bin ferrolb-crdgen -- --out config/crd/bases

## generated-check: fail when committed generated files differ from what the code generates
generated-check:
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	$(CARGO) run --locked --quiet -p ferrolb-api --bin ferrolb-crdgen -- --out "$$tmp" && \
	if ! diff -ru config/crd/bases "$$tmp"; then \
	  echo "config/crd/bases is stale: run 'make generate' and commit the result" >&2; exit 1; \
	fi

unit-test:
	$(CARGO) test --workspace --locked
