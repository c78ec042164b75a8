# The FerroLB image: ferrolb-operator, ferrolb-controller and ferrolb-speaker, statically linked
# (glibc with +crt-static), on an empty base (no shell, no libc, no CA bundle), run as 65532:65532.
#
# From source (needs the Rust image; a registry must be reachable):
#   docker build -t ghcr.io/ferrolb/ferrolb:v0.1.0 --build-arg VERSION=0.1.0 .
# From binaries built on the host (what tests/testbed/images.sh does, offline): the build context is
# a directory holding bin/ferrolb-{operator,controller,speaker}, and the Rust stage is skipped:
#   buildah bud --build-arg BINARIES=host --build-arg VERSION=0.1.0 -f Dockerfile CONTEXT
ARG BINARIES=build
ARG RUST_IMAGE=rust:1.95-bookworm

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
# With --target, RUSTFLAGS reaches only the target binaries: build scripts and proc-macros stay
# dynamic, as they must.
ENV CARGO_TARGET_DIR=/src/target
RUN RUSTFLAGS="-C target-feature=+crt-static" cargo build --locked --release \
      --target x86_64-unknown-linux-gnu \
      -p ferrolb-operator -p ferrolb-controller -p ferrolb-speaker \
      --bin ferrolb-operator --bin ferrolb-controller --bin ferrolb-speaker \
 && mkdir -p /out/bin \
 && for b in ferrolb-operator ferrolb-controller ferrolb-speaker; do \
      cp "target/x86_64-unknown-linux-gnu/release/$b" /out/bin/; \
    done

FROM scratch AS host
COPY bin/ferrolb-operator bin/ferrolb-controller bin/ferrolb-speaker /out/bin/

FROM ${BINARIES} AS binaries

FROM scratch
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="FerroLB" \
      org.opencontainers.image.description="FerroLB, a bare-metal Kubernetes load balancer: operator, controller and speaker" \
      org.opencontainers.image.source="https://github.com/ferrolb/ferrolb" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"
COPY --from=binaries /out/bin/ /usr/local/bin/
ENV PATH=/usr/local/bin
USER 65532:65532
CMD ["ferrolb-operator"]
