//! Stable Diffusion inference on candle: seeds that match other tools, A1111 prompt syntax,
//! samplers and schedules by their A1111 names, and the networks (text encoders, UNet, VAE)
//! loaded from single-file checkpoints through `danlu-format`; LoRA/LyCORIS networks merged
//! into the weights, textual-inversion embeddings and A1111 hypernetworks ([`adapters`]).

pub mod adapters;
pub mod allocator;
pub mod device;
mod error;
pub mod kernels;
pub mod model;
pub mod pipeline;
pub mod prompt;
pub mod rng;
pub mod sampling;

pub use device::DeviceChoice;
pub use error::{Error, Result};
