//! Test fixtures: generators of small files in real model formats with real key names and
//! shapes, and the path of the shared corpus of files made by real tools.
//!
//! Nothing here is shipped; tests and benchmarks use it.

pub mod corpus;
pub mod models;
pub mod tiny;
pub mod torch;
