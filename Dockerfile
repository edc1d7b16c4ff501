# ordertrail's container image: built in a Rust image, run from a distroless one as a non-root user.
#
#   docker build -t ghcr.io/ordertrail/ordertrail:0.1.0 .
#
# The service only: the `demo` feature (the simulated distributor and its OpenTelemetry SDK) is left out, and the
# `dist` profile strips debug information.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --locked --profile dist --no-default-features --bin ordertrail \
 && install -D target/dist/ordertrail /out/ordertrail

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/ordertrail /usr/local/bin/ordertrail
# The chart mounts its volume at /var/lib/ordertrail and passes --data-dir; a plain `docker run` keeps the store
# in the non-root user's home, the one directory of the image it may write (mount a volume there to keep it).
USER 65532:65532
WORKDIR /home/nonroot
EXPOSE 4317 4318 8080 8081
ENTRYPOINT ["/usr/local/bin/ordertrail"]
# The API listens on loopback unless told otherwise; in a container that is out of reach, so the image binds it to
# the container's addresses (publish it with care: it shows approvers' e-mail addresses; see "Secure it").
CMD ["run", "--data-dir=/home/nonroot/ordertrail-data", "--api-http-listen=0.0.0.0:8080", "--api-grpc-listen=0.0.0.0:8081"]
