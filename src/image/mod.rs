//! Images: references, the docker-archive format, the local cache, and the sources that fill it.
//!
//! How the rest of dropship uses it:
//! - open the cache: `Cache::open(&Cache::resolve_dir(flag, settings.cache_dir), level)` with
//!   `level` from `--zstd-level` or `compression::zstd_level_for_gzip(download_compress)`;
//! - fill it: `source::fetch(&daemon, &cache, &refs, pull, retry, seed)` with a
//!   `source::localhost::LocalDaemon` or a `runtime::delegate::RemoteDelegate` (pull what the daemon
//!   lacks, skip what is cached, one `docker save` streamed into `cache.ingest_async`);
//!   `--offline`: `source::resolve_offline(&cache, &refs)`;
//! - push: `cache.archive_plan(&ids, &omit)` (exact sizes, `omit` from `layers_to_omit` and a
//!   node's image chains), then `cache.archive_reader(plan, ArchiveFormat::Zstd)` as the SSH
//!   channel's stdin for `zstd -dc | docker load`.

pub mod archive;
pub mod cache;
pub mod compression;
pub mod digest;
pub mod manifest;
pub mod platform;
pub mod reference;
pub mod source;
/// Synthetic docker-archives for tests and benchmarks; not part of the shipped library.
#[cfg(any(test, feature = "synth"))]
pub mod synth;

pub use cache::{
    ArchiveFormat, ArchiveLayout, ArchivePlan, ArchiveReader, Cache, CacheError, ImageRecord,
    IngestReport, LayerBlob, layers_to_omit,
};
pub use digest::{DiffId, Digest, ImageId};
pub use reference::{ImageRef, RefError};
