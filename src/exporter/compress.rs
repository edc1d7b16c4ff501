//! Compression of export requests: once per request, however many attempts it takes, straight from the encoded
//! pieces the request is made of (queue entries), without joining them first.

use ordertrail_core::config::Compression;
use std::io::Write;

/// `parts` (together one encoded request) compressed as configured, after `prefix` zero bytes that the caller
/// fills in (the gRPC frame header), so that the frame needs no second copy.
pub(crate) fn compress(compression: Compression, parts: &[&[u8]], prefix: usize) -> std::io::Result<Vec<u8>> {
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let mut out = Vec::with_capacity(prefix + compressed_estimate(compression, total));
    out.resize(prefix, 0);
    match compression {
        Compression::None => {
            for part in parts {
                out.extend_from_slice(part);
            }
            Ok(out)
        }
        Compression::Gzip { level } => {
            let mut encoder = flate2::write::GzEncoder::new(out, flate2::Compression::new(level));
            for part in parts {
                encoder.write_all(part)?;
            }
            encoder.finish()
        }
        Compression::Zstd { level } => {
            let mut encoder = zstd::stream::write::Encoder::new(out, level)?;
            encoder.set_pledged_src_size(u64::try_from(total).ok())?;
            encoder.include_checksum(false)?;
            for part in parts {
                encoder.write_all(part)?;
            }
            encoder.finish()
        }
    }
}

/// A first guess of the output size, so that the buffer rarely grows: OTLP spans compress about fivefold.
fn compressed_estimate(compression: Compression, len: usize) -> usize {
    match compression {
        Compression::None => len,
        Compression::Gzip { .. } | Compression::Zstd { .. } => len / 4 + 64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn every_kind_gives_back_the_parts_joined_after_the_prefix() {
        let parts: [&[u8]; 3] = [b"first part, ", b"second part, ", b"and the third part repeated repeated"];
        let joined: Vec<u8> = parts.concat();
        let plain = compress(Compression::None, &parts, 5).unwrap();
        assert_eq!(&plain[..5], &[0; 5]);
        assert_eq!(&plain[5..], joined.as_slice());

        let gzip = compress(Compression::Gzip { level: 1 }, &parts, 5).unwrap();
        let mut inflated = Vec::new();
        flate2::read::GzDecoder::new(&gzip[5..]).read_to_end(&mut inflated).unwrap();
        assert_eq!(inflated, joined);

        let zstd = compress(Compression::Zstd { level: 3 }, &parts, 0).unwrap();
        assert_eq!(zstd::stream::decode_all(zstd.as_slice()).unwrap(), joined);
    }
}
