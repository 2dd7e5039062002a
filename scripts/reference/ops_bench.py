#!/usr/bin/env python3
"""PyTorch CPU side of the per-operation benchmark of issue 10: the operations of danlu-diffusion's
`tests/ops_bench.rs`, on the same SD1.5-shaped checkpoint, with diffusers networks
(`scripts/bench` runs both and prints the ratios).

  * text_2x77: CLIP ViT-L on token ids [2, 77];
  * unet_step_64, unet_step_32: the UNet on latents [2, 4, 64, 64] and [2, 4, 32, 32], context
    [2, 77, 768] (one CFG step at 512x512 and 256x256);
  * vae_decode_512: the VAE decoder on [1, 4, 64, 64];
  * attention_4096: F.scaled_dot_product_attention on q, k, v [2, 8, 4096, 40], what diffusers'
    default AttnProcessor2_0 calls in the UNet's first level;
  * conv3x3_320_64: nn.Conv2d(320, 320, 3, padding=1) on [2, 320, 64, 64];
  * group_norm_320_64: nn.GroupNorm(32, 320) on [2, 320, 64, 64].

Each operation runs once to warm up, then --repeat times (three times as often for the single
operations); the median and minimum go to --out as JSON. Float32, torch.no_grad, all CPU threads.

Usage: .venv/bin/python scripts/reference/ops_bench.py [CHECKPOINT] [--repeat N] [--out FILE]
"""

import argparse
import json
import os
import resource
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.loaders import single_file_utils as sfu
from safetensors.torch import load_file
from transformers import CLIPTextConfig, CLIPTextModel

sys.path.insert(0, os.path.dirname(__file__))
from model_make_tiny import ROOT  # noqa: E402


def timed(fn, repeat):
    fn()
    times = []
    for _ in range(max(repeat, 1)):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return {"median_s": statistics.median(times), "min_s": min(times)}


def load(path):
    ckpt = load_file(path)
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
    return unet.eval(), vae.eval(), text.eval()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint", nargs="?",
                    default=os.path.join(ROOT, "target", "reference", "model", "sd15_shape.safetensors"))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out")
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count())
    gen = torch.Generator().manual_seed(0)
    ops = {}

    def record(name, result):
        print(f"torch {name:<22} median {result['median_s']:8.4f} s  min {result['min_s']:8.4f} s",
              file=sys.stderr)
        ops[name] = result

    t0 = time.perf_counter()
    unet, vae, text = load(args.checkpoint)
    tokens = torch.arange(154).reshape(2, 77)
    context = torch.randn((2, 77, 768), generator=gen)
    with torch.no_grad():
        record("text_2x77", timed(lambda: text(input_ids=tokens).last_hidden_state, args.repeat))
        for name, side in (("unet_step_64", 64), ("unet_step_32", 32)):
            latent = torch.randn((2, 4, side, side), generator=gen)
            record(name, timed(lambda: unet(latent, 500.5, encoder_hidden_states=context).sample, args.repeat))
        one = torch.randn((1, 4, 64, 64), generator=gen)
        record("vae_decode_512", timed(lambda: vae.decode(one).sample, args.repeat))
    model_s = time.perf_counter() - t0
    del unet, vae, text

    small = max(args.repeat, 1) * 3
    q, k, v = (torch.randn((2, 8, 4096, 40), generator=gen) for _ in range(3))
    image = torch.randn((2, 320, 64, 64), generator=gen)
    conv = torch.nn.Conv2d(320, 320, 3, padding=1).eval()
    norm = torch.nn.GroupNorm(32, 320, eps=1e-6).eval()
    with torch.no_grad():
        record("attention_4096", timed(lambda: F.scaled_dot_product_attention(q, k, v), small))
        record("conv3x3_320_64", timed(lambda: conv(image), small))
        record("group_norm_320_64", timed(lambda: norm(image), small))

    report = {"engine": f"torch {torch.__version__}", "threads": torch.get_num_threads(),
              "repeat": args.repeat, "load_and_model_s": model_s,
              "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "ops": ops}
    text_out = json.dumps(report, indent=2)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text_out)
    else:
        print(text_out)


if __name__ == "__main__":
    main()
