//! Images: references, the docker-archive format, the local cache, and the sources that fill it.

pub mod archive;
pub mod cache;
pub mod compression;
pub mod credentials;
pub mod digest;
pub mod localhost;
pub mod reference;
pub mod remote;
pub mod source;
pub mod synth;

pub use cache::{
    ArchiveFormat, ArchivePlan, ArchiveReader, Cache, CacheError, ImageRecord, IngestReport,
    layers_to_omit,
};
pub use digest::{DiffId, Digest, ImageId};
pub use reference::{ImageRef, RefError};
