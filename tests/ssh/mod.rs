//! The SSH transport and `dropship ping` on the test bed.

mod passphrase;
mod ping;
mod sessions;
