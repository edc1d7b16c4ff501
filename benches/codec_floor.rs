//! The codec floor: what any OTLP hop must spend per span on the benchmark's payload, on one core, with the
//! libraries ordertrail uses (prost through opentelemetry-proto, flate2 with zlib-rs, zstd). `scripts/bench`
//! runs it after the hop benchmark; by hand: `cargo bench --bench codec_floor`.
//!
//! - `decode`: an encoded request of 96 demo-like spans into messages, as a receiver does.
//! - `decode_encode`: and encoded again, as a hop that changes nothing sends it.
//! - `gzip_1`, `gzip_6`, `zstd_1`: compressing the encoded request, at the level ordertrail uses by default and at
//!   gzip's usual default; each prints the compressed size once, so that speed and size are read together.
//!
//! Criterion reports the time per request; divide by 96 for the time per span (BENCHMARKS.md does).

#[path = "payload/mod.rs"]
mod payload;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use std::hint::black_box;
use std::io::Write;

fn encoded_request() -> Vec<u8> {
    let payload = payload::Payload { spans_per_request: 96, orders: 1_000_000, demo_like: true, spans_per_trace: 12 };
    payload::request(&payload, 1_000, 1_780_000_000_000_000_000).encode_to_vec()
}

fn gzip(bytes: &[u8], level: u32) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level));
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn codec(c: &mut Criterion) {
    let bytes = encoded_request();
    let spans = 96;
    eprintln!(
        "codec floor payload: {} bytes for {spans} spans ({} B a span); gzip 1: {} B, gzip 6: {} B, zstd 1: {} B",
        bytes.len(),
        bytes.len() / spans,
        gzip(&bytes, 1).len(),
        gzip(&bytes, 6).len(),
        zstd::bulk::compress(&bytes, 1).unwrap().len(),
    );
    let mut group = c.benchmark_group("codec_floor_96_spans");
    group.throughput(Throughput::Elements(96));
    group.bench_function("decode", |b| {
        b.iter(|| black_box(ExportTraceServiceRequest::decode(black_box(bytes.as_slice())).unwrap()))
    });
    group.bench_function("decode_encode", |b| {
        b.iter(|| {
            let request = ExportTraceServiceRequest::decode(black_box(bytes.as_slice())).unwrap();
            black_box(request.encode_to_vec())
        })
    });
    let decoded = ExportTraceServiceRequest::decode(bytes.as_slice()).unwrap();
    group.bench_function("encode", |b| {
        b.iter_batched(|| decoded.clone(), |request| black_box(request.encode_to_vec()), BatchSize::SmallInput)
    });
    group.bench_function("gzip_1", |b| b.iter(|| black_box(gzip(black_box(&bytes), 1))));
    group.bench_function("gzip_6", |b| b.iter(|| black_box(gzip(black_box(&bytes), 6))));
    group.bench_function("zstd_1", |b| b.iter(|| black_box(zstd::bulk::compress(black_box(&bytes), 1).unwrap())));
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
