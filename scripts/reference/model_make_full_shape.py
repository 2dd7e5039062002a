#!/usr/bin/env python3
"""Writes an SD1.5- or SD2.1-shaped single-file checkpoint (A1111 key names, float16, small
random values) for loading and memory measurements of full-size networks.

Shapes come from the real configurations (https://huggingface.co/runwayml/stable-diffusion-v1-5
and https://huggingface.co/stabilityai/stable-diffusion-2-1: unet/, vae/, text_encoder/
config.json; SD2's text tower is open_clip's ViT-H-14 text transformer with all 24 layers, as
single files store it), instantiated on PyTorch's meta device, renamed with the same
diffusers -> LDM mapping as `model_make_tiny.py`. Values are random normals of standard deviation
0.01 (the files are for memory and speed, not parity). About 2.1 GB (SD1.5) and 2.6 GB (SD2.1).

Usage: .venv/bin/python scripts/reference/model_make_full_shape.py [sd15|sd21]
       (writes target/reference/model/sd15_shape.safetensors or sd21_shape.safetensors)
"""

import os
import sys

import torch
from safetensors.torch import save_file
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel
import open_clip

sys.path.insert(0, os.path.dirname(__file__))
from model_make_tiny import ROOT, unet_to_ldm, vae_to_ldm  # noqa: E402


def main():
    family = sys.argv[1] if len(sys.argv) > 1 else "sd15"
    sd2 = family == "sd21"
    out = os.path.join(ROOT, "target", "reference", "model", f"{family}_shape.safetensors")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with torch.device("meta"):
        unet = UNet2DConditionModel(
            block_out_channels=(320, 640, 1280, 1280),
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            layers_per_block=2,
            attention_head_dim=(5, 10, 20, 20) if sd2 else 8,
            cross_attention_dim=1024 if sd2 else 768,
            use_linear_projection=sd2,
        )
        vae = AutoencoderKL(
            block_out_channels=(128, 256, 512, 512),
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            layers_per_block=2,
            latent_channels=4,
        )
        if sd2:
            text = open_clip.transformer.TextTransformer(
                context_length=77, vocab_size=49408, width=1024, heads=16, layers=24, output_dim=1024
            )
        else:
            text = CLIPTextModel(
                CLIPTextConfig(
                    hidden_size=768,
                    intermediate_size=3072,
                    num_attention_heads=12,
                    num_hidden_layers=12,
                    hidden_act="quick_gelu",
                    projection_dim=768,
                )
            )
    shapes = {}
    shapes.update(unet_to_ldm(unet.state_dict(), dict(unet.config)))
    shapes.update(vae_to_ldm(vae.state_dict(), dict(vae.config)))
    for k, v in text.state_dict().items():
        if sd2:
            shapes["cond_stage_model.model." + k] = v
        else:
            shapes["cond_stage_model.transformer.text_model." + k.removeprefix("text_model.")] = v
    gen = torch.Generator().manual_seed(0)
    tensors = {}
    for k, v in shapes.items():
        if "position_ids" in k:
            tensors[k] = torch.arange(77).unsqueeze(0)
        else:
            tensors[k] = (torch.randn(v.shape, generator=gen) * 0.01).to(torch.float16)
    save_file(tensors, out)
    n = sum(t.numel() for t in tensors.values())
    print(f"wrote {out}: {len(tensors)} tensors, {n / 1e6:.0f}M parameters, {os.path.getsize(out) / 1e9:.2f} GB")


if __name__ == "__main__":
    main()
