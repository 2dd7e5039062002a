//! Stable Diffusion inference on candle: text encoders, UNet, VAE, samplers, seeds.
