//! Generators of tiny real-format model files and paths to the shared corpus, for tests.
