//! Networks: text encoders, UNet, VAE, and loading them from single-file checkpoints.
