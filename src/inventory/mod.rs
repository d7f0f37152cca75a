//! Ansible inventories read exactly as Ansible reads them.

pub mod connection;
pub mod settings;

/// Everything that can be wrong with an inventory source.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("{path}: {message}")]
    Invalid {
        path: std::path::PathBuf,
        message: String,
    },
}
