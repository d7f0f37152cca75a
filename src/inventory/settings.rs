//! Kubespray's download variables, as our users already write them in their inventories.

use std::path::PathBuf;

/// The download role's settings with Kubespray's defaults; CLI flags override them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadSettings {
    /// `download_run_once` (default false).
    pub run_once: bool,
    /// `download_localhost` (default false): pull on the machine running dropship.
    pub localhost: bool,
    /// `download_force_cache` (default false).
    pub force_cache: bool,
    /// `download_cache_dir` (default /tmp/kubespray_cache); `None` when the inventory does not set it.
    pub cache_dir: Option<PathBuf>,
    /// `download_keep_remote_cache` (default false).
    pub keep_remote_cache: bool,
    /// `download_compress` gzip level 1-9 (default 1).
    pub compress: u32,
    /// `download_retries` attempts (default 4).
    pub retries: u32,
    /// `retry_stagger` seconds (default 5): between attempts sleep rand(0..stagger) + 3 s.
    pub retry_stagger: u64,
    /// `local_release_dir` on nodes (default /tmp/releases).
    pub local_release_dir: PathBuf,
    /// The download delegate: first host of `kube_control_plane` (legacy `kube-master`),
    /// `None` when `download_localhost` is set or no such group exists.
    pub delegate: Option<String>,
}

impl Default for DownloadSettings {
    fn default() -> Self {
        DownloadSettings {
            run_once: false,
            localhost: false,
            force_cache: false,
            cache_dir: None,
            keep_remote_cache: false,
            compress: 1,
            retries: 4,
            retry_stagger: 5,
            local_release_dir: PathBuf::from("/tmp/releases"),
            delegate: None,
        }
    }
}
