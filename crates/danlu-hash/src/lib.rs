//! Streaming model hashes as A1111 and Civitai show them (SHA-256, AutoV1, AutoV2, AutoV3, BLAKE3).
