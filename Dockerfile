# Herald: multi-stage build. The runtime image holds the binary and the
# migrations only, and runs as an unprivileged user.
FROM rust:1.95-bookworm AS build
WORKDIR /src
# The whole tree (minus .dockerignore): Cargo.toml names test and bench
# targets whose files must exist for the manifest to load.
COPY . .
RUN cargo build --release --locked --bin herald

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system herald \
    && useradd --system --gid herald --home-dir /var/lib/herald --create-home herald
COPY --from=build /src/target/release/herald /usr/local/bin/herald
COPY --from=build /src/migrations /usr/share/herald/migrations
USER herald
WORKDIR /var/lib/herald
ENV HERALD_DATA_DIR=/var/lib/herald
# Inside a container, listen on every interface so the published port
# reaches herald (outside one, the default stays 127.0.0.1:8001 with its
# development-mode rules). The same variable tells `herald health` where to
# probe; it probes 0.0.0.0 on 127.0.0.1. A worker's own listener, for its
# health check and /metrics: HERALD_WORKER__LISTEN=0.0.0.0:8002.
ENV HERALD_SIDECAR__LISTEN=0.0.0.0:8001
EXPOSE 8001
# /readyz: the database migrated and the channel layer reachable. A
# `herald worker` container overrides it with `herald health --worker`
# (deploy/compose.yaml does).
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["herald", "health"]
ENTRYPOINT ["herald"]
CMD ["--help"]
