//! `dropship push`: one task per node, bounded like Ansible forks.

pub mod decide;
