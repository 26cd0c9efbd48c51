# factory-sidecar: multi-stage release build, small non-root runtime image.
#
#   docker build -t factory-sidecar .
#   docker run -p 8081:8081 -p 9901:9901 \
#     -v "$PWD/config/sidecar.toml:/etc/factory-sidecar/sidecar.toml:ro" \
#     -e SIDECAR_ADMIN_TOKEN=... factory-sidecar
#
# The config is read from /etc/factory-sidecar/sidecar.toml ($SIDECAR_CONFIG).
# Inside a container the listeners must bind 0.0.0.0; the image sets
# SIDECAR_LISTEN and SIDECAR_ADMIN_LISTEN for that (they override the file).
# One worker (TOKIO_WORKER_THREADS=1, like nginx's default worker_processes 1):
# the set-up the published benchmarks measure, with server.busy_poll on; pass
# -e TOKIO_WORKER_THREADS=N for more (docs/operations.md, Docker).

FROM rust:1-bookworm AS build
WORKDIR /src
# No .git in the build context: pass the commit for --version and build_info
# (docker build --build-arg SIDECAR_GIT_COMMIT=$(git rev-parse --short=12 HEAD) .).
ARG SIDECAR_GIT_COMMIT=unknown
ENV SIDECAR_GIT_COMMIT=$SIDECAR_GIT_COMMIT
COPY Cargo.toml Cargo.lock build.rs ./
COPY src ./src
COPY benches ./benches
COPY config ./config
RUN cargo build --release --locked --bin factory-sidecar

# distroless/cc: glibc and CA roots only, no shell, runs as uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/factory-sidecar /usr/local/bin/factory-sidecar
COPY config/sidecar.toml /etc/factory-sidecar/sidecar.toml
ENV SIDECAR_CONFIG=/etc/factory-sidecar/sidecar.toml \
    SIDECAR_LISTEN=0.0.0.0:8081 \
    SIDECAR_ADMIN_LISTEN=0.0.0.0:9901 \
    TOKIO_WORKER_THREADS=1
USER nonroot:nonroot
EXPOSE 8081 9901
HEALTHCHECK --interval=10s --timeout=4s --start-period=5s --retries=3 \
  CMD ["/usr/local/bin/factory-sidecar", "healthcheck", "--url", "http://127.0.0.1:9901/healthz"]
ENTRYPOINT ["/usr/local/bin/factory-sidecar"]
CMD ["run"]
