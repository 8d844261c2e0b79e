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
ENTRYPOINT ["herald"]
CMD ["--help"]
