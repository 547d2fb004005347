//! Compression of a batch's records section: gzip, LZ4 (frame format) and zstd.
//!
//! The producer compresses, the broker stores and serves the compressed bytes, the
//! consumer decompresses. Decompression is bounded: output past `limit` bytes is an
//! error, so a small malicious batch cannot make a consumer allocate gigabytes.

use std::io::{Read, Write};

use crate::batch::Compression;
use crate::error::{Error, Result};

/// Compresses `input` with `codec`.
pub(crate) fn compress(codec: Compression, input: &[u8]) -> Result<Vec<u8>> {
    let io = Error::Compress;
    match codec {
        Compression::None => Ok(input.to_vec()),
        Compression::Gzip => {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            encoder.write_all(input).map_err(io)?;
            encoder.finish().map_err(io)
        }
        Compression::Lz4 => {
            // 64 KiB blocks (Kafka's default): the automatic size picks 4 MiB blocks
            // for large batches, and every (de)compression allocates a block buffer.
            let info =
                lz4_flex::frame::FrameInfo::new().block_size(lz4_flex::frame::BlockSize::Max64KB);
            let mut encoder = lz4_flex::frame::FrameEncoder::with_frame_info(info, Vec::new());
            encoder.write_all(input).map_err(io)?;
            encoder
                .finish()
                .map_err(|e| Error::Compress(std::io::Error::other(e)))
        }
        Compression::Zstd => zstd::bulk::compress(input, 1).map_err(io),
    }
}

/// Decompresses `input`, failing once the output would exceed `limit` bytes.
pub(crate) fn decompress(codec: Compression, input: &[u8], limit: usize) -> Result<Vec<u8>> {
    match codec {
        Compression::None => {
            if input.len() > limit {
                return Err(Error::DecompressedTooLarge { limit });
            }
            Ok(input.to_vec())
        }
        Compression::Gzip => read_bounded(flate2::read::GzDecoder::new(input), limit),
        Compression::Lz4 => read_bounded(lz4_flex::frame::FrameDecoder::new(input), limit),
        Compression::Zstd => {
            let decoder =
                zstd::stream::read::Decoder::with_buffer(input).map_err(Error::Decompress)?;
            read_bounded(decoder, limit)
        }
    }
}

/// Reads at most `limit` bytes; one more byte available means the bound was exceeded.
fn read_bounded(reader: impl Read, limit: usize) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    reader
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(Error::Decompress)?;
    if out.len() > limit {
        return Err(Error::DecompressedTooLarge { limit });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CODECS: [Compression; 4] = [
        Compression::None,
        Compression::Gzip,
        Compression::Lz4,
        Compression::Zstd,
    ];

    #[test]
    fn every_codec_roundtrips() {
        let input: Vec<u8> = (0..10_000u32)
            .flat_map(|i| (i % 97).to_be_bytes())
            .collect();
        for codec in CODECS {
            let packed = compress(codec, &input).unwrap();
            assert_eq!(
                decompress(codec, &packed, input.len()).unwrap(),
                input,
                "{codec:?}"
            );
        }
    }

    #[test]
    fn decompression_past_the_limit_is_an_error() {
        let input = vec![0u8; 1 << 20];
        for codec in CODECS {
            let packed = compress(codec, &input).unwrap();
            let err = decompress(codec, &packed, 1000).unwrap_err();
            assert!(
                matches!(err, Error::DecompressedTooLarge { limit: 1000 }),
                "{codec:?}: {err}"
            );
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for codec in CODECS[1..].iter().copied() {
            assert!(decompress(codec, b"definitely not compressed", 1 << 20).is_err());
        }
    }
}
