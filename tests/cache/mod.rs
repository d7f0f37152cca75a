//! `dropship cache`: on synthetic archives, and against the test bed's daemons.

mod cli;
mod testbed;
