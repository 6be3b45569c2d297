# syntax=docker/dockerfile:1
# The konnector image: a release build of `bins/konnector` on a distroless, non-root runtime.
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
    CARGO_INCREMENTAL=0
# The whole workspace: cargo needs every member's manifest to resolve the lock file.
COPY . .
# rust-toolchain.toml asks for "stable" plus rustfmt/clippy; RUSTUP_TOOLCHAIN makes the build use
# the image's own toolchain instead of letting rustup download another one. An empty
# KONNECTOR_GIT_VERSION is unset so that the built-in default applies.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    if [ -z "$KONNECTOR_GIT_VERSION" ]; then unset KONNECTOR_GIT_VERSION; fi \
    && export RUSTUP_TOOLCHAIN="$(rustup default | cut -d' ' -f1)" \
    && cargo build --release -p konnector --locked \
    && mkdir -p /out \
    && cp target/release/konnector /out/konnector \
    && /out/konnector --version

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="konnector" \
      org.opencontainers.image.description="Klutch konnector: binds provider APIs into an app cluster" \
      org.opencontainers.image.source="https://github.com/konnector-rs/konnector" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build --chown=0:0 --chmod=0755 /out/konnector /usr/local/bin/konnector
# distroless "nonroot": uid/gid 65532, no shell, no package manager; CA certificates and glibc
# (and libgcc) are included, which is all the binary links against.
USER 65532:65532
# /healthz + /readyz (--health-probe-bind-address), /metrics (--metrics-bind-address).
EXPOSE 8080 8081
ENTRYPOINT ["/usr/local/bin/konnector"]
