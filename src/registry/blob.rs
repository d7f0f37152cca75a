//! A blob as it downloads: chunks as they arrive, counted and hashed on the way, so nothing
//! is held beyond the chunk in hand and a wrong byte count or digest is the stream's last item.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use sha2::{Digest as _, Sha256};

use super::error::{ErrorKind, RegistryError};
use crate::image::Digest;

type Chunks = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// A blob download in progress. Its size is known before the first byte (the descriptor's);
/// the stream ends with an error if the registry sends more or fewer bytes, or bytes whose
/// sha256 is not the descriptor's digest. Consumers must not trust the content until the
/// stream has ended without error.
pub struct Blob {
    chunks: Chunks,
    size: u64,
    digest: Digest,
    hasher: Sha256,
    received: u64,
    finished: bool,
    image: String,
    host: String,
}

impl Blob {
    pub(crate) fn new(
        response: reqwest::Response,
        size: u64,
        digest: Digest,
        image: String,
        host: String,
    ) -> Blob {
        Blob {
            chunks: Box::pin(response.bytes_stream()),
            size,
            digest,
            hasher: Sha256::new(),
            received: 0,
            finished: false,
            image,
            host,
        }
    }

    /// The blob's size in bytes, from its descriptor.
    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn digest(&self) -> Digest {
        self.digest
    }

    /// The host it is coming from (a mirror's, when a mirror serves it).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The same bytes as an `AsyncRead`, errors becoming `io::Error`s that keep the message.
    pub fn into_async_read(self) -> impl tokio::io::AsyncRead + Send {
        tokio_util::io::StreamReader::new(self.map(|item| item.map_err(std::io::Error::other)))
    }

    fn fail(&mut self, kind: ErrorKind) -> Poll<Option<Result<Bytes, RegistryError>>> {
        self.finished = true;
        Poll::Ready(Some(Err(RegistryError {
            image: self.image.clone(),
            host: self.host.clone(),
            kind,
        })))
    }

    fn what(&self) -> String {
        format!("blob {}", self.digest)
    }
}

impl Stream for Blob {
    type Item = Result<Bytes, RegistryError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.finished {
            return Poll::Ready(None);
        }
        match self.chunks.as_mut().poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(chunk))) => {
                self.received += chunk.len() as u64;
                if self.received > self.size {
                    let kind = ErrorKind::SizeMismatch {
                        what: self.what(),
                        expected: self.size,
                        actual: self.received,
                    };
                    return self.fail(kind);
                }
                self.hasher.update(&chunk);
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(e))) => self.fail(ErrorKind::from_transport(&e)),
            Poll::Ready(None) => {
                if self.received != self.size {
                    let kind = ErrorKind::SizeMismatch {
                        what: self.what(),
                        expected: self.size,
                        actual: self.received,
                    };
                    return self.fail(kind);
                }
                let actual = Digest::from_bytes(std::mem::take(&mut self.hasher).finalize().into());
                if actual != self.digest {
                    let kind = ErrorKind::DigestMismatch {
                        what: self.what(),
                        expected: self.digest,
                        actual,
                    };
                    return self.fail(kind);
                }
                self.finished = true;
                Poll::Ready(None)
            }
        }
    }
}
