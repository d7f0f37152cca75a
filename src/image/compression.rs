//! Compression formats: sniffing an input's format, the zstd level we use for the cache, and
//! zstd frames that store bytes without compressing them.

use std::io::{self, BufRead, BufReader, Read, Write};

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

/// zstd frames carrying `len` bytes in raw (stored) blocks: the framing of RFC 8878 around data
/// that is already compressed (a gzip layer blob), so that it can travel inside a zstd stream
/// (`zstd -dc | docker load`) without being compressed a second time.
///
/// Hand-written because no zstd encoder has a "store only" mode; the tests check the frames
/// against the zstd decoder.
pub mod stored {
    use super::*;

    const MAGIC: u32 = 0xFD2F_B528;
    /// Frame header descriptor: no content size, not single-segment, no checksum, no dictionary.
    const DESCRIPTOR: u8 = 0x00;
    /// Window descriptor: exponent 7, mantissa 0, a 128 KiB window (`1 << (10 + 7)`), which
    /// allows blocks of the format's maximum size.
    const WINDOW: u8 = 7 << 3;
    const MAX_BLOCK: u64 = 128 << 10;
    const HEADER_LEN: u64 = 6;
    const BLOCK_HEADER_LEN: u64 = 3;

    fn blocks(len: u64) -> u64 {
        len.div_ceil(MAX_BLOCK).max(1)
    }

    /// The exact size of the frame that stores `len` bytes.
    pub fn frame_len(len: u64) -> u64 {
        HEADER_LEN + blocks(len) * BLOCK_HEADER_LEN + len
    }

    /// Copy exactly `len` bytes of `data` into one stored frame on `out`; a short input is an
    /// `UnexpectedEof` error (the frame would lie about its end otherwise).
    pub fn write_frame(mut data: impl Read, len: u64, out: &mut impl Write) -> io::Result<()> {
        let mut header = MAGIC.to_le_bytes().to_vec();
        header.extend([DESCRIPTOR, WINDOW]);
        out.write_all(&header)?;
        let mut buffer = vec![0u8; MAX_BLOCK as usize];
        let mut left = len;
        for _ in 0..blocks(len) {
            let size = left.min(MAX_BLOCK);
            left -= size;
            // Last_Block (bit 0), Block_Type 0 = raw (bits 1-2), Block_Size (bits 3-23).
            let block = (size << 3) as u32 | u32::from(left == 0);
            out.write_all(&block.to_le_bytes()[..3])?;
            let chunk = &mut buffer[..size as usize];
            data.read_exact(chunk)?;
            out.write_all(chunk)?;
        }
        Ok(())
    }
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
    fn stored_frames_decode_to_their_data_and_have_the_promised_size() {
        for len in [0usize, 1, 131_071, 131_072, 131_073, 400_000] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let mut frame = Vec::new();
            stored::write_frame(&data[..], len as u64, &mut frame).unwrap();
            assert_eq!(frame.len() as u64, stored::frame_len(len as u64), "{len}");
            // Concatenated with a compressed frame, as inside an archive stream.
            frame.extend(zstd::encode_all(&b"after"[..], 3).unwrap());
            let mut expected = data.clone();
            expected.extend(b"after");
            assert_eq!(zstd::decode_all(&frame[..]).unwrap(), expected, "{len}");
        }
        let short = stored::write_frame(&b"abc"[..], 4, &mut Vec::new()).unwrap_err();
        assert_eq!(short.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn gzip_levels_map_to_zstd_levels() {
        assert_eq!(zstd_level_for_gzip(1), 3);
        assert_eq!(zstd_level_for_gzip(0), 3);
        assert_eq!(zstd_level_for_gzip(9), 19);
    }
}
