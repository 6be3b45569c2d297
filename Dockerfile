# syntax=docker/dockerfile:1
# The konnector image: a static (musl) release build of `bins/konnector` on an empty base, as
# `cargo xtask image` builds it with buildah (same user, entrypoint, ports and labels; a test in
# xtask/src/image.rs reads this file to keep the two from drifting).
#
#   docker build -t ghcr.io/konnector-rs/konnector:0.1.0 .
#   docker build --build-arg KONNECTOR_GIT_VERSION=v1.33.0+kube-bind-v0.1.0 -t ... .
#
# The chart's default image (charts/konnector/values.yaml `image.repository`, tag = appVersion)
# is this image.

FROM rust:1-bookworm AS build
WORKDIR /src
# Version string reported on ClusterBindings (`konnector version`); empty keeps the built-in
# default `v1.33.0+kube-bind-v<crate version>`.
ARG KONNECTOR_GIT_VERSION=""
ENV CARGO_TERM_COLOR=never \
    CARGO_INCREMENTAL=0 \
    CC_x86_64_unknown_linux_musl=musl-gcc
# ring's C and assembly need a musl C compiler.
RUN apt-get update -qq && apt-get install -y -qq musl-tools && rm -rf /var/lib/apt/lists/*
# The whole workspace: cargo needs every member's manifest to resolve the lock file.
COPY . .
# rust-toolchain.toml asks for "stable" plus rustfmt/clippy; RUSTUP_TOOLCHAIN makes the build use
# the image's own toolchain instead of letting rustup download another one. An empty
# KONNECTOR_GIT_VERSION is unset so that the built-in default applies.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    if [ -z "$KONNECTOR_GIT_VERSION" ]; then unset KONNECTOR_GIT_VERSION; fi \
    && export RUSTUP_TOOLCHAIN="$(rustup default | cut -d' ' -f1)" \
    && rustup target add x86_64-unknown-linux-musl \
    && cargo build --release -p konnector --locked --target x86_64-unknown-linux-musl \
    && mkdir -p /out \
    && cp target/x86_64-unknown-linux-musl/release/konnector /out/konnector \
    && /out/konnector --version

# Nothing but the static binary: no shell, no package manager, no libc. The konnector trusts the
# CAs of its kubeconfigs (and the in-cluster ServiceAccount's), not a system bundle.
FROM scratch
LABEL org.opencontainers.image.title="konnector" \
      org.opencontainers.image.description="Klutch konnector: binds provider APIs into an app cluster" \
      org.opencontainers.image.source="https://github.com/konnector-rs/konnector" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build --chown=0:0 --chmod=0755 /out/konnector /konnector
# mimalloc, the static build's allocator, returns memory it does not use (idle RSS 12 MiB, not 24).
ENV MIMALLOC_ARENA_EAGER_COMMIT=0 \
    MIMALLOC_PURGE_DELAY=0
# Numeric and not root (distroless' "nonroot" uid/gid), so that runAsNonRoot can check it.
USER 65532:65532
# /healthz + /readyz (--health-probe-bind-address), /metrics (--metrics-bind-address).
EXPOSE 8080 8081
ENTRYPOINT ["/konnector"]
