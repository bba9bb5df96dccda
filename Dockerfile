# cria in a container: build with the Rust toolchain, run as a non-root user
# in a slim image holding only the binary.
#
#   docker build -t cria .                       # model from a volume:
#   docker run -p 8080:8080 -v ~/.cache/cria/models:/models:ro cria -m /models/SmolLM2-135M-Instruct.Q4_1.gguf
#
#   docker build --target baked --build-arg MODEL=models/my.gguf -t cria:my .   # model inside the image
#   docker run -p 8080:8080 cria:my
#
# The server listens on 0.0.0.0:8080 in the container, answers /health
# (readiness: 503 while loading and draining) and /livez, and on SIGTERM
# (docker stop) drains: see --drain-timeout-secs, and give `docker stop -t`
# a longer time than that.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates crates
RUN cargo build --release --locked -p cria && strip target/release/cria

FROM debian:bookworm-slim AS base
RUN groupadd --system --gid 10001 cria \
 && useradd --system --uid 10001 --gid cria --home-dir /models --no-create-home cria \
 && mkdir -p /models && chown cria:cria /models
COPY --from=build /src/target/release/cria /usr/local/bin/cria
ENV CRIA_MODELS_DIR=/models
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["cria", "serve", "--host", "0.0.0.0", "--port", "8080"]

# The model baked in: --build-arg MODEL=path/inside/the/build/context.gguf
FROM base AS baked
ARG MODEL
COPY --chown=10001:10001 ${MODEL} /models/model.gguf
CMD ["-m", "/models/model.gguf"]

# Default: the model comes from a volume at /models.
FROM base AS runtime
VOLUME /models
CMD ["-m", "/models/model.gguf"]
