# Brook broker image: `brook serve` as a non-root user, data in the /data volume.
#
#   docker build -t brook .
#   docker run --rm -p 9420:9420 -p 9421:9421 -v brook-data:/data brook
#
# Two stages. The build stage compiles the dependencies first, against stub
# sources of the workspace crates, so that the (slow) dependency layer is
# rebuilt only when a Cargo.toml, Cargo.lock or the .proto files change, not on
# every source edit. The runtime stage is Debian slim with nothing but the
# binary. Both stages use the same Debian release, so the glibc the binary was
# linked against is the one it runs on.
#
# Linted by .ci/deploy-checks (hadolint); the broker itself is exercised there
# the way this image runs it (same environment, unprivileged user).

ARG RUST_IMAGE=rust:1.95.0-slim-trixie
ARG RUNTIME_IMAGE=debian:13.1-slim

# ---------------------------------------------------------------------------
FROM ${RUST_IMAGE} AS build
WORKDIR /src

# Debug info is for local profiling; the image carries symbol names only
# (backtraces stay readable) and is ~10x smaller.
ENV CARGO_PROFILE_RELEASE_DEBUG=0 \
    CARGO_PROFILE_RELEASE_STRIP=debuginfo \
    CARGO_TERM_COLOR=never

# 1. Dependencies only. Every workspace member needs its manifest (the
#    workspace must resolve) and a stub target. proto/ is copied whole: its
#    build script compiles the .proto files, and its source is only the
#    generated code, which changes with the API, as rarely as dependencies do.
COPY Cargo.toml Cargo.lock ./
COPY proto/ proto/
COPY record/Cargo.toml record/
COPY storage/Cargo.toml storage/
COPY engine/Cargo.toml engine/
COPY cluster/Cargo.toml cluster/
COPY broker/Cargo.toml broker/
COPY client/Cargo.toml client/
COPY cli/Cargo.toml cli/
COPY benches/Cargo.toml benches/
RUN for crate in record storage engine cluster broker client benches; do \
        mkdir -p "$crate/src" && : > "$crate/src/lib.rs"; \
    done \
    && mkdir -p cli/src && echo 'fn main() {}' > cli/src/main.rs \
    && cargo build --release --locked --bin brook

# 2. The real sources. Cargo decides what to rebuild by modification time and
#    COPY keeps the build context's (older) times, so the crate roots are
#    touched: otherwise the stub builds of step 1 would count as up to date.
COPY record/ record/
COPY storage/ storage/
COPY engine/ engine/
COPY cluster/ cluster/
COPY broker/ broker/
COPY client/ client/
COPY cli/ cli/
COPY benches/ benches/
RUN touch record/src/lib.rs storage/src/lib.rs engine/src/lib.rs cluster/src/lib.rs \
        broker/src/lib.rs client/src/lib.rs benches/src/lib.rs cli/src/main.rs \
    && cargo build --release --locked --bin brook \
    && install -D -m 0755 target/release/brook /out/brook \
    && /out/brook --version

# ---------------------------------------------------------------------------
FROM ${RUNTIME_IMAGE} AS runtime

# A fixed numeric UID/GID (10001), matching the Helm chart's securityContext,
# so that Kubernetes can check runAsNonRoot without a passwd lookup.
RUN groupadd --system --gid 10001 brook \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin brook \
    && mkdir /data \
    && chown 10001:10001 /data

COPY --from=build /out/brook /usr/local/bin/brook

# Every setting is also a BROOK_* variable (flag > env > config file > default).
# The listeners bind every interface inside the container; BROOK_LOG sets the
# log filter (default "info").
ENV BROOK_DATA_DIR=/data \
    BROOK_LISTEN=0.0.0.0:9420 \
    BROOK_HTTP_LISTEN=0.0.0.0:9421 \
    BROOK_LOG_FORMAT=json

VOLUME ["/data"]
WORKDIR /data
USER 10001:10001

# 9420: gRPC (brook.v1, grpc.health.v1). 9421: HTTP /health, /ready, /metrics.
EXPOSE 9420 9421

# `brook health` GETs http://127.0.0.1:9421/health: 0 when alive and no
# partition is poisoned, 1 otherwise. HTTP answers (200) while the data
# directory is still being recovered, so the start period only covers the
# process start.
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
    CMD ["brook", "health"]

# SIGTERM: /ready turns 503, in-flight work finishes, partitions are fsynced,
# exit 0 within shutdown_grace_ms (30 s by default). Give `docker stop` more
# than that: `docker stop -t 40`.
STOPSIGNAL SIGTERM
ENTRYPOINT ["brook", "serve"]
