//! Integration tests of the `danlu` binary, one module per command.

// Test harness: a failed expectation is a test failure, and fixtures are written directly.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods,
    unreachable_pub,
    missing_docs
)]

mod convert;
mod doctor;
mod download;
mod generate;
mod inspect;
mod list;
mod noise;
mod pnginfo;
mod reproduce;
mod scan;
mod serve;
mod sort;
mod util;
mod vae;
