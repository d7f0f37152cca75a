//! sha256 digests (`sha256:<hex>`) and readers/writers that compute them while data streams by.

use std::fmt;
use std::io::{self, Read, Write};

use sha2::{Digest as _, Sha256};

/// A sha256 content digest: an image ID (config digest), a layer diff ID, or an object checksum.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest([u8; 32]);

/// The sha256 of an uncompressed layer tar, as listed in an image config's `rootfs.diff_ids`.
pub type DiffId = Digest;
/// The sha256 of an image's config JSON: what `docker images --no-trunc` shows as IMAGE ID.
pub type ImageId = Digest;

#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a sha256 digest (expected sha256: followed by 64 hex digits)")]
pub struct DigestError(pub String);

impl Digest {
    pub fn of(bytes: &[u8]) -> Self {
        Digest(Sha256::digest(bytes).into())
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Digest(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lower-case hex without the `sha256:` prefix (used as file names).
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Accepts `sha256:<hex>` or bare 64-digit hex.
    pub fn parse(text: &str) -> Result<Self, DigestError> {
        let hex_part = text.strip_prefix("sha256:").unwrap_or(text);
        let mut out = [0u8; 32];
        match hex::decode_to_slice(hex_part, &mut out) {
            Ok(()) if hex_part.len() == 64 => Ok(Digest(out)),
            _ => Err(DigestError(text.to_string())),
        }
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", &self.hex()[..12])
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Digest::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Counts and hashes every byte that passes through, in either direction.
pub struct Hashing<T> {
    inner: T,
    hasher: Sha256,
    bytes: u64,
}

impl<T> Hashing<T> {
    pub fn new(inner: T) -> Self {
        Hashing {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// The digest and count of everything seen so far, and the wrapped reader or writer.
    pub fn finish(self) -> (Digest, u64, T) {
        (
            Digest(self.hasher.finalize().into()),
            self.bytes,
            self.inner,
        )
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_with_or_without_prefix_and_round_trips() {
        let d = Digest::of(b"abc");
        assert_eq!(
            d.to_string(),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(Digest::parse(&d.to_string()).unwrap(), d);
        assert_eq!(Digest::parse(&d.hex()).unwrap(), d);
        assert!(Digest::parse("sha256:abc").is_err());
    }

    #[test]
    fn hashing_reader_matches_one_shot_digest() {
        let mut reader = Hashing::new(&b"hello world"[..]);
        io::copy(&mut reader, &mut io::sink()).unwrap();
        let (digest, bytes, _) = reader.finish();
        assert_eq!((digest, bytes), (Digest::of(b"hello world"), 11));
    }
}
