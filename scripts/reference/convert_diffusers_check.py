#!/usr/bin/env python3
"""Real-peer check of `danlu convert`: diffusers loads a converted SD1.5-layout file.

Given a source single-file checkpoint (LDM/A1111 key names, float32) and the file `danlu convert
--dtype f16` made of it, loads both with diffusers' `StableDiffusionPipeline.from_single_file`
(the source with `torch_dtype=torch.float16`, so PyTorch itself does the f32 -> f16 rounding)
and compares every tensor of the UNet, the VAE and the text encoder bit for bit (NaN payloads
included, through an int16 view).

No network: `HF_HUB_OFFLINE=1`, and the pipeline configuration is written to a local folder
from diffusers' and transformers' own model classes, with the SD1.5 values of
https://huggingface.co/stable-diffusion-v1-5/stable-diffusion-v1-5 (unet/, vae/, text_encoder/,
scheduler/ config.json); the tokenizer is a minimal local CLIP vocabulary (only weights are
compared).

Usage: .venv/bin/python scripts/reference/convert_diffusers_check.py --make-source SRC.ckpt
         (writes an SD1.5-shaped fp32 `.ckpt` with EMA, as `convert_bench.py` does, 7.7 GB)
       danlu convert SRC.ckpt -o OUT.safetensors --dtype f16 --prune --verify
       .venv/bin/python scripts/reference/convert_diffusers_check.py --source SRC --converted OUT
Run from Rust: DANLU_REFERENCE=1 cargo test -p danlu-cli --test cli convert::diffusers
(the test runs the three steps in a temporary folder).
Prints `all tensors match` and exits 0 on success.
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import diffusers  # noqa: E402
from diffusers import (  # noqa: E402
    AutoencoderKL,
    PNDMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTokenizer  # noqa: E402


def write_config(root):
    """An SD1.5 pipeline folder holding only configurations."""
    os.makedirs(root, exist_ok=True)
    with torch.device("meta"):
        unet = UNet2DConditionModel(
            sample_size=64,
            in_channels=4,
            out_channels=4,
            cross_attention_dim=768,
            attention_head_dim=8,
            block_out_channels=(320, 640, 1280, 1280),
            layers_per_block=2,
        )
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=["DownEncoderBlock2D"] * 4,
            up_block_types=["UpDecoderBlock2D"] * 4,
            block_out_channels=[128, 256, 512, 512],
            layers_per_block=2,
            latent_channels=4,
            sample_size=512,
        )
    unet.save_config(os.path.join(root, "unet"))
    vae.save_config(os.path.join(root, "vae"))
    CLIPTextConfig(
        vocab_size=49408,
        hidden_size=768,
        intermediate_size=3072,
        num_hidden_layers=12,
        num_attention_heads=12,
        max_position_embeddings=77,
        hidden_act="quick_gelu",
        projection_dim=768,
        architectures=["CLIPTextModel"],
    ).save_pretrained(os.path.join(root, "text_encoder"))
    PNDMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        skip_prk_steps=True,
        steps_offset=1,
    ).save_config(os.path.join(root, "scheduler"))
    tok = os.path.join(root, "tokenizer")
    os.makedirs(tok, exist_ok=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "a</w>": 2, "a": 3}
    with open(os.path.join(tok, "vocab.json"), "w") as f:
        json.dump(vocab, f)
    with open(os.path.join(tok, "merges.txt"), "w") as f:
        f.write("#version: 0.2\n")
    CLIPTokenizer(os.path.join(tok, "vocab.json"), os.path.join(tok, "merges.txt")).save_pretrained(tok)
    index = {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": diffusers.__version__,
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "scheduler": ["diffusers", "PNDMScheduler"],
        "safety_checker": [None, None],
        "feature_extractor": [None, None],
        "image_encoder": [None, None],
        "requires_safety_checker": False,
    }
    with open(os.path.join(root, "model_index.json"), "w") as f:
        json.dump(index, f)


def load(path, config):
    t = time.time()
    pipe = StableDiffusionPipeline.from_single_file(
        path,
        config=config,
        torch_dtype=torch.float16,
        safety_checker=None,
        feature_extractor=None,
        local_files_only=True,
    )
    print(f"loaded {os.path.basename(path)} in {time.time() - t:.1f}s")
    return pipe


def bits(t):
    return t.view(torch.int16) if t.dtype in (torch.float16, torch.bfloat16) else t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--make-source", default=None)
    ap.add_argument("--source")
    ap.add_argument("--converted")
    ap.add_argument("--work", default=None)
    a = ap.parse_args()
    if a.make_source:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from convert_bench import make_ckpt

        print(f"wrote {a.make_source}: {make_ckpt(a.make_source)} tensors")
        return
    if not (a.source and a.converted):
        ap.error("--source and --converted are required")
    work = a.work or os.path.dirname(os.path.abspath(a.converted))
    config = os.path.join(work, "sd15-config")
    write_config(config)
    src = load(a.source, config)
    out = load(a.converted, config)
    compared = 0
    bad = []
    for part in ("unet", "vae", "text_encoder"):
        sa = getattr(src, part).state_dict()
        sb = getattr(out, part).state_dict()
        if set(sa) != set(sb):
            bad.append(f"{part}: key sets differ: {sorted(set(sa) ^ set(sb))[:5]}")
            continue
        for k in sa:
            x, y = sa[k], sb[k]
            if x.dtype != y.dtype or x.shape != y.shape or not torch.equal(bits(x), bits(y)):
                bad.append(f"{part}.{k}: {x.dtype}{tuple(x.shape)} vs {y.dtype}{tuple(y.shape)}")
            compared += 1
        print(f"{part}: {len(sa)} tensors compared")
    if bad:
        print(f"{len(bad)} tensors differ, first: {bad[:5]}")
        sys.exit(1)
    print(f"all tensors match ({compared} tensors, diffusers {diffusers.__version__})")


if __name__ == "__main__":
    main()
