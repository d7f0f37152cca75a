//! Inventories: bad input, the Ansible oracle, fuzzing of the readers, and Ansible Vault.

mod errors;
mod fuzz;
mod oracle;
mod vault;
