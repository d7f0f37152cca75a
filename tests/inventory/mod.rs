//! Inventories: bad input, the Ansible oracle, and fuzzing of the readers.

mod errors;
mod fuzz;
mod oracle;
