#!/usr/bin/env python3
"""PyTorch CPU side of the engine benchmark: the same timings as danlu-diffusion's
`tests/pipeline_bench.rs`, on the same SD1.5-shaped checkpoint, with diffusers networks.

  * text encoding: one 77-token chunk through CLIP ViT-L (all 12 layers);
  * one sampling step at 512x512: the UNet on a batch of 2 (prompt and negative prompt, as
    CFG runs it), latent [2, 4, 64, 64], context [2, 77, 768];
  * VAE decode of one [1, 4, 64, 64] latent to 512x512;
  * peak resident memory of the process (`ru_maxrss`).

Each timing is the best of `--repeat` runs after one warm-up, float32, all CPU threads.
The checkpoint comes from `model_make_full_shape.py sd15`.

Usage: .venv/bin/python scripts/reference/pipeline_bench.py [CHECKPOINT] [--repeat N]
"""

import argparse
import json
import os
import resource
import sys
import time

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.loaders import single_file_utils as sfu
from safetensors.torch import load_file
from transformers import CLIPTextConfig, CLIPTextModel

sys.path.insert(0, os.path.dirname(__file__))
from model_make_tiny import ROOT  # noqa: E402


def best(fn, repeat):
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint", nargs="?",
                    default=os.path.join(ROOT, "target", "reference", "model", "sd15_shape.safetensors"))
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count())
    t0 = time.perf_counter()
    ckpt = load_file(args.checkpoint)
    unet = UNet2DConditionModel(
        block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        layers_per_block=2,
        attention_head_dim=8,
        cross_attention_dim=768,
    )
    unet.load_state_dict({k: v.float() for k, v in sfu.convert_ldm_unet_checkpoint(ckpt, dict(unet.config)).items()})
    vae = AutoencoderKL(
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=2,
        latent_channels=4,
    )
    vae.load_state_dict({k: v.float() for k, v in sfu.convert_ldm_vae_checkpoint(ckpt, dict(vae.config)).items()})
    text = CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_attention_heads=12,
                                        num_hidden_layers=12, hidden_act="quick_gelu", projection_dim=768))
    conv = {k.removeprefix("text_model."): v.float() for k, v in sfu.convert_ldm_clip_checkpoint(ckpt).items()}
    text.load_state_dict(conv, strict=False)
    del ckpt
    load = time.perf_counter() - t0
    unet.eval(), vae.eval(), text.eval()
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 49406, (1, 77), generator=gen)
    latent = torch.randn((2, 4, 64, 64), generator=gen)
    context = torch.randn((2, 77, 768), generator=gen)
    with torch.no_grad():
        text_s = best(lambda: text(input_ids=tokens).last_hidden_state, args.repeat)
        step_s = best(lambda: unet(latent, 500.5, encoder_hidden_states=context).sample, args.repeat)
        vae_s = best(lambda: vae.decode(latent[:1]).sample, args.repeat)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"engine": f"torch {torch.__version__}", "threads": torch.get_num_threads(),
                      "load_s": load, "text_s": text_s, "step_s": step_s, "vae_decode_s": vae_s,
                      "peak_rss_bytes": rss}))


if __name__ == "__main__":
    main()
