//! Compression formats: sniffing an input's format, and the zstd level we use for the cache.

use std::io::{self, BufRead, BufReader, Read};

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// zstd level used when neither `--zstd-level` nor `download_compress` says otherwise.
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;

/// Map Kubespray's `download_compress` (a gzip level, 1-9) to a zstd level.
///
/// zstd 3 already beats gzip 1 in both speed and ratio, so gzip 1 (Kubespray's default) maps
/// to 3; each gzip step above that adds two zstd levels, up to 19 for gzip 9. Measured figures
/// are in docs/cache.md.
pub fn zstd_level_for_gzip(gzip_level: u32) -> i32 {
    let gzip_level = gzip_level.clamp(1, 9) as i32;
    DEFAULT_ZSTD_LEVEL + 2 * (gzip_level - 1)
}

/// Whether `head` (the first bytes of some data) starts like gzip or zstd.
pub fn is_compressed(head: &[u8]) -> bool {
    head.starts_with(&GZIP_MAGIC) || head.starts_with(&ZSTD_MAGIC)
}

/// Wrap `input` so it reads the uncompressed bytes, whatever it was: gzip, zstd or plain.
pub fn decompressing_reader<'a, R: Read + 'a>(input: R) -> io::Result<Box<dyn Read + 'a>> {
    let mut buffered = BufReader::with_capacity(1 << 16, input);
    let head = buffered.fill_buf()?;
    Ok(if head.starts_with(&GZIP_MAGIC) {
        Box::new(flate2::bufread::MultiGzDecoder::new(buffered))
    } else if head.starts_with(&ZSTD_MAGIC) {
        Box::new(zstd::stream::read::Decoder::with_buffer(buffered)?)
    } else {
        Box::new(buffered)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn round_trip(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        decompressing_reader(data)
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn sniffs_gzip_zstd_and_plain() {
        let plain = b"plain tar bytes".repeat(100);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&plain).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::encode_all(&plain[..], 3).unwrap();
        assert_eq!(round_trip(&plain), plain);
        assert_eq!(round_trip(&gz), plain);
        assert_eq!(round_trip(&zst), plain);
    }

    #[test]
    fn gzip_levels_map_to_zstd_levels() {
        assert_eq!(zstd_level_for_gzip(1), 3);
        assert_eq!(zstd_level_for_gzip(0), 3);
        assert_eq!(zstd_level_for_gzip(9), 19);
    }
}
