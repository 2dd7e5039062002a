#!/usr/bin/env python3
"""Builds tiny random-weight Stable Diffusion 1.x and 2.x checkpoints and their reference outputs.

The networks have the real architectures (diffusers `UNet2DConditionModel` and `AutoencoderKL`,
transformers `CLIPTextModel` for SD1's CLIP ViT-L text tower, open_clip `TextTransformer` for
SD2's OpenCLIP ViT-H text tower) with small widths. Each model is saved as one A1111-style
single-file checkpoint with original (LDM) key names:

    model.diffusion_model.*           UNet (ldm `UNetModel`)
    first_stage_model.*               VAE (ldm `AutoencoderKL`)
    cond_stage_model.transformer.*    SD1 text encoder (transformers names, ldm `FrozenCLIPEmbedder`)
    cond_stage_model.model.*          SD2 text encoder (open_clip names, ldm `FrozenOpenCLIPEmbedder`)

The diffusers -> LDM renaming here is checked by loading the file back with diffusers' own
single-file converters (`diffusers/loaders/single_file_utils.py`) and requiring every tensor to
come back under its original name with its original value.

Weights are drawn so activations stay near unit size (fan-in scaled normal, norms near 1): with
default initialisation a random UNet amplifies rounding error and fp32 references stop agreeing
with themselves. References are computed in float64 from the weights exactly as stored (SD1 is
stored in float16, SD2 in float16 with a bfloat16 token embedding, as pruned half-precision
checkpoints are), so a float32 implementation is
judged against the exact value and not against another float32 rounding.

Outputs (under --out, default `target/reference/model/`):
    sd1_tiny.safetensors, sd2_tiny.safetensors      checkpoints
    sd1_tiny_ref.safetensors, sd2_tiny_ref.safetensors   inputs and float64 outputs
    sd1_tiny_unet.ckpt                               SD1's UNet alone, as a Lightning `.ckpt`
    sd1_tiny_diffusers_names.json, sd2_...          diffusers name -> [stored name, third or -1,
                                                    shape], as diffusers' converters map them
With --commit the files are also copied to `crates/danlu-diffusion/tests/reference/model/`.

Usage: .venv/bin/python scripts/reference/model_make_tiny.py [--out DIR] [--commit]
"""

import argparse
import json
import os
import shutil

import torch
from safetensors.torch import load_file, save_file

from diffusers import AutoencoderKL, UNet2DConditionModel
from diffusers.loaders import single_file_utils as sfu
from transformers import CLIPTextConfig, CLIPTextModel
import open_clip

ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", ".."))
VOCAB = 49408

# Tiny configurations. Block types, layer structure and options follow the real configs:
#   SD1.5: https://huggingface.co/runwayml/stable-diffusion-v1-5/blob/main/unet/config.json
#   SD2.1: https://huggingface.co/stabilityai/stable-diffusion-2-1/blob/main/unet/config.json
# with two levels instead of four and one resnet per level instead of two. The channel counts stay
# multiples of 32 because ldm's GroupNorm32 always uses 32 groups. The text towers keep the real
# 49408-token vocabulary (so real token ids work) at width 16, which keeps each file small enough
# to commit.
SD1 = dict(
    name="sd1_tiny",
    text_width=16,
    text_heads=2,
    text_layers=3,
    unet=dict(
        block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        layers_per_block=1,
        attention_head_dim=2,
        cross_attention_dim=16,
        use_linear_projection=False,
    ),
    store=torch.float16,
)
SD2 = dict(
    name="sd2_tiny",
    text_width=16,
    text_heads=2,
    text_layers=3,
    unet=dict(
        block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        layers_per_block=1,
        # SD2 gives a head count per level; diffusers calls it `attention_head_dim`.
        attention_head_dim=(2, 4),
        cross_attention_dim=16,
        use_linear_projection=True,
    ),
    store=torch.float16,
)
VAE = dict(
    block_out_channels=(32, 32, 32, 64),
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    layers_per_block=1,
    latent_channels=4,
    norm_num_groups=32,
)


def scale_weights(model, gen):
    """Fan-in scaled weights, norms near one, small biases."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2 and "embedding" not in name:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=gen) / fan_in**0.5)
            elif "embedding" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
            elif name.endswith("weight"):  # norms
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.05 * torch.randn(p.shape, generator=gen))


# ---------------------------------------------------------------- diffusers -> LDM names
RESNET_UNET = [
    ("norm1", "in_layers.0"),
    ("conv1", "in_layers.2"),
    ("time_emb_proj", "emb_layers.1"),
    ("norm2", "out_layers.0"),
    ("conv2", "out_layers.3"),
    ("conv_shortcut", "skip_connection"),
]


def unet_to_ldm(sd, cfg):
    levels = len(cfg["block_out_channels"])
    per = cfg["layers_per_block"]
    attn = [t.startswith("CrossAttn") for t in cfg["down_block_types"]]
    prefix = {
        "time_embedding.linear_1.": "time_embed.0.",
        "time_embedding.linear_2.": "time_embed.2.",
        "conv_in.": "input_blocks.0.0.",
        "conv_norm_out.": "out.0.",
        "conv_out.": "out.2.",
        "mid_block.resnets.0.": "middle_block.0.",
        "mid_block.attentions.0.": "middle_block.1.",
        "mid_block.resnets.1.": "middle_block.2.",
    }
    for i in range(levels):
        for j in range(per):
            n = 1 + i * (per + 1) + j
            prefix[f"down_blocks.{i}.resnets.{j}."] = f"input_blocks.{n}.0."
            prefix[f"down_blocks.{i}.attentions.{j}."] = f"input_blocks.{n}.1."
        if i < levels - 1:
            prefix[f"down_blocks.{i}.downsamplers.0.conv."] = f"input_blocks.{(i + 1) * (per + 1)}.0.op."
    for i in range(levels):
        level = levels - 1 - i
        for j in range(per + 1):
            n = i * (per + 1) + j
            prefix[f"up_blocks.{i}.resnets.{j}."] = f"output_blocks.{n}.0."
            prefix[f"up_blocks.{i}.attentions.{j}."] = f"output_blocks.{n}.1."
        if i < levels - 1:
            slot = 2 if attn[level] else 1
            prefix[f"up_blocks.{i}.upsamplers.0.conv."] = f"output_blocks.{i * (per + 1) + per}.{slot}.conv."
    out = {}
    for k, v in sd.items():
        hit = [p for p in prefix if k.startswith(p)]
        assert len(hit) == 1, (k, hit)
        rest = k[len(hit[0]):]
        if ".resnets." in hit[0] or hit[0].startswith("mid_block.resnets"):
            for a, b in RESNET_UNET:
                if rest.startswith(a + "."):
                    rest = b + rest[len(a):]
                    break
        out["model.diffusion_model." + prefix[hit[0]] + rest] = v
    return out


def vae_to_ldm(sd, cfg):
    levels = len(cfg["block_out_channels"])
    prefix = {}
    for part in ("encoder", "decoder"):
        prefix[f"{part}.mid_block.resnets.0."] = f"{part}.mid.block_1."
        prefix[f"{part}.mid_block.resnets.1."] = f"{part}.mid.block_2."
        prefix[f"{part}.mid_block.attentions.0."] = f"{part}.mid.attn_1."
        prefix[f"{part}.conv_norm_out."] = f"{part}.norm_out."
        prefix[f"{part}.conv_in."] = f"{part}.conv_in."
        prefix[f"{part}.conv_out."] = f"{part}.conv_out."
    for i in range(levels):
        for j in range(cfg["layers_per_block"] + 1):
            prefix[f"encoder.down_blocks.{i}.resnets.{j}."] = f"encoder.down.{i}.block.{j}."
            prefix[f"decoder.up_blocks.{i}.resnets.{j}."] = f"decoder.up.{levels - 1 - i}.block.{j}."
        prefix[f"encoder.down_blocks.{i}.downsamplers.0.conv."] = f"encoder.down.{i}.downsample.conv."
        prefix[f"decoder.up_blocks.{i}.upsamplers.0.conv."] = f"decoder.up.{levels - 1 - i}.upsample.conv."
    prefix["quant_conv."] = "quant_conv."
    prefix["post_quant_conv."] = "post_quant_conv."
    attn = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
    out = {}
    for k, v in sd.items():
        hit = [p for p in prefix if k.startswith(p)]
        assert len(hit) == 1, (k, hit)
        rest = k[len(hit[0]):]
        if prefix[hit[0]].endswith("attn_1."):
            name, leaf = rest.rsplit(".", 1)
            rest = attn[name] + "." + leaf
            if v.ndim == 2:  # ldm uses 1x1 convolutions
                v = v[:, :, None, None]
        elif rest.startswith("conv_shortcut."):
            rest = "nin_shortcut." + rest[len("conv_shortcut."):]
        out["first_stage_model." + prefix[hit[0]] + rest] = v
    return out


# ---------------------------------------------------------------- models
def make(spec, seed):
    gen = torch.Generator().manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        norm_num_groups=32,
        **spec["unet"],
    )
    scale_weights(unet, gen)
    vae = AutoencoderKL(in_channels=3, out_channels=3, **VAE)
    scale_weights(vae, gen)
    w, h, n = spec["text_width"], spec["text_heads"], spec["text_layers"]
    if spec["name"].startswith("sd1"):
        text = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=VOCAB,
                hidden_size=w,
                intermediate_size=4 * w,
                num_hidden_layers=n,
                num_attention_heads=h,
                max_position_embeddings=77,
                hidden_act="quick_gelu",
                projection_dim=w,
            )
        )
        scale_weights(text, gen)
        # ldm `FrozenCLIPEmbedder` holds a transformers `CLIPTextModel`, whose keys start with
        # `text_model.` (transformers 5 dropped that level from the class itself).
        text_sd = {
            "cond_stage_model.transformer.text_model." + k.removeprefix("text_model."): v
            for k, v in text.state_dict().items()
        }
    else:
        text = open_clip.transformer.TextTransformer(
            context_length=77, vocab_size=VOCAB, width=w, heads=h, layers=n, output_dim=w
        )
        scale_weights(text, gen)
        text_sd = {"cond_stage_model.model." + k: v for k, v in text.state_dict().items()}
        text_sd["cond_stage_model.model.logit_scale"] = torch.tensor(4.6052)
    ckpt = {}
    ckpt.update(unet_to_ldm(unet.state_dict(), dict(unet.config)))
    ckpt.update(vae_to_ldm(vae.state_dict(), dict(vae.config)))
    ckpt.update(text_sd)
    # Diffusion schedule buffers of ldm's `LatentDiffusion`, present in real checkpoints and
    # unused by the networks.
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    ckpt["betas"] = betas.float()
    ckpt["alphas_cumprod"] = torch.cumprod(1 - betas, 0).float()
    store = {}
    for k, v in ckpt.items():
        v = v.detach().contiguous()
        if v.is_floating_point():
            v = v.to(spec["store"])
        store[k] = v
    if spec["name"].startswith("sd2"):
        key = "cond_stage_model.model.token_embedding.weight"
        store[key] = store[key].to(torch.bfloat16)
    return unet, vae, text, store


def reload(spec, unet, vae, text, path):
    """Loads the LDM file back through diffusers' converters; checks every tensor round-trips."""
    ckpt = load_file(path)
    got = sfu.convert_ldm_unet_checkpoint(ckpt, dict(unet.config))
    want = unet.state_dict()
    assert set(got) == set(want), set(got) ^ set(want)
    unet.load_state_dict({k: v.float() for k, v in got.items()})
    got = sfu.convert_ldm_vae_checkpoint(ckpt, dict(vae.config))
    want = vae.state_dict()
    assert set(got) == set(want), set(got) ^ set(want)
    vae.load_state_dict({k: v.float() for k, v in got.items()})
    if spec["name"].startswith("sd1"):
        got = {k.removeprefix("text_model."): v for k, v in sfu.convert_ldm_clip_checkpoint(ckpt).items()}
        want = text.state_dict()
        assert set(got) - {"text_model.embeddings.position_ids"} == set(want) - {
            "text_model.embeddings.position_ids"
        }, set(got) ^ set(want)
        text.load_state_dict({k: v.float() for k, v in got.items()}, strict=False)
    else:
        sd = {
            k[len("cond_stage_model.model."):]: v.float()
            for k, v in ckpt.items()
            if k.startswith("cond_stage_model.model.") and not k.endswith("logit_scale")
        }
        text.load_state_dict(sd)
        # Cross-check open_clip's tower against diffusers' own OpenCLIP conversion.
        w = spec["text_width"]
        hf = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=VOCAB,
                hidden_size=w,
                intermediate_size=4 * w,
                num_hidden_layers=spec["text_layers"],
                num_attention_heads=spec["text_heads"],
                max_position_embeddings=77,
                hidden_act="gelu",
                projection_dim=w,
            )
        )
        conv = sfu.convert_open_clip_checkpoint(hf, {k: v.float() for k, v in ckpt.items()})
        conv.pop("text_projection.weight", None)
        conv = {k.removeprefix("text_model."): v for k, v in conv.items()}
        missing, unexpected = hf.load_state_dict(conv, strict=False)
        assert not unexpected and all("position_ids" in m for m in missing), (missing, unexpected)
        return hf
    return None


def diffusers_names(spec, path, unet, vae):
    """Which stored tensor each diffusers name comes from, as diffusers' own single-file
    converters decide: `{component: {diffusers name: [ldm name, chunk of 3 or -1, shape]}}`. Tensors are
    matched by value (random float16 values are unique); OpenCLIP's fused `in_proj` tensors match
    by thirds."""
    ckpt = load_file(path)
    out = {}
    convs = {
        "unet": sfu.convert_ldm_unet_checkpoint(ckpt, dict(unet.config)),
        "vae": sfu.convert_ldm_vae_checkpoint(ckpt, dict(vae.config)),
    }
    if spec["name"].startswith("sd1"):
        convs["text_encoder"] = sfu.convert_ldm_clip_checkpoint(ckpt)
    else:
        w = spec["text_width"]
        hf = CLIPTextModel(CLIPTextConfig(hidden_size=w, num_attention_heads=spec["text_heads"]))
        convs["text_encoder"] = sfu.convert_open_clip_checkpoint(hf, ckpt)
    by_value = {}
    for k, v in ckpt.items():
        if v.is_floating_point():
            by_value.setdefault((tuple(v.flatten().tolist()[:16]), v.numel()), []).append((k, -1))
            if k.endswith("in_proj_weight") or k.endswith("in_proj_bias"):
                for i, part in enumerate(v.chunk(3, 0)):
                    key = (tuple(part.flatten().tolist()[:16]), part.numel())
                    by_value.setdefault(key, []).append((k, i))
    for comp, conv in convs.items():
        names = {}
        for dk, dv in conv.items():
            if "position_ids" in dk or dk == "text_projection.weight":
                continue
            hits = by_value.get((tuple(dv.flatten().tolist()[:16]), dv.numel()), [])
            assert len(hits) == 1, (dk, hits)
            names[dk] = [hits[0][0], hits[0][1], list(dv.shape)]
        out[comp] = names
    return out


def openclip_hidden(text, tokens, skip_last):
    """ldm `FrozenOpenCLIPEmbedder.encode_with_transformer`: resblocks up to `len - skip_last`,
    then `ln_final` (A1111 `sd_hijack_open_clip.py` calls it)."""
    x = text.token_embedding(tokens) + text.positional_embedding
    mask = text.attn_mask.to(x.dtype)
    blocks = text.transformer.resblocks
    for r in blocks[: len(blocks) - skip_last]:
        x = r(x, attn_mask=mask)
    return text.ln_final(x)


def a1111_unet(unet, latent, t, context):
    """The UNet as A1111 runs ldm's: every upsampler doubles the size (ldm `Upsample`), and the
    concatenation with a skip connection first resizes to the skip's size
    (A1111 `modules/sd_hijack_unet.py`, `TorchHijackForUnet.cat`, nearest)."""
    from diffusers.models import upsampling

    real_cat, real_up = torch.cat, upsampling.Upsample2D.forward

    def cat(tensors, *args, **kwargs):
        if len(tensors) == 2:
            a, b = tensors
            if a.shape[-2:] != b.shape[-2:]:
                a = torch.nn.functional.interpolate(a, b.shape[-2:], mode="nearest")
            tensors = (a, b)
        return real_cat(tensors, *args, **kwargs)

    def up(self, hidden_states, output_size=None, *args, **kwargs):
        return real_up(self, hidden_states, None, *args, **kwargs)

    torch.cat, upsampling.Upsample2D.forward = cat, up
    try:
        return unet(latent, t, encoder_hidden_states=context).sample
    finally:
        torch.cat, upsampling.Upsample2D.forward = real_cat, real_up


def references(spec, unet, vae, text, hf):
    gen = torch.Generator().manual_seed(1234)
    d = torch.float64
    unet, vae, text = unet.to(d).eval(), vae.to(d).eval(), text.to(d).eval()
    tokens = torch.full((2, 77), 49407 if spec["name"].startswith("sd1") else 0, dtype=torch.long)
    for row, n in enumerate((7, 20)):
        tokens[row, 0] = 49406
        tokens[row, 1 : n + 1] = torch.randint(0, 49406, (n,), generator=gen)
        tokens[row, n + 1] = 49407
    ref = {"tokens": tokens.to(torch.int64)}
    with torch.no_grad():
        if spec["name"].startswith("sd1"):
            out = text(input_ids=tokens, output_hidden_states=True)
            ref["text_last"] = out.last_hidden_state
            ref["text_skip2"] = text.final_layer_norm(out.hidden_states[-2])
        else:
            ref["text_last"] = openclip_hidden(text, tokens, 0)
            ref["text_skip2"] = openclip_hidden(text, tokens, 1)
            hf = hf.to(d).eval()
            out = hf(input_ids=tokens, output_hidden_states=True)
            alt = hf.final_layer_norm(out.hidden_states[-2])
            diff = (alt - ref["text_skip2"]).abs().max().item()
            assert diff < 1e-9, f"open_clip and diffusers disagree: {diff}"
        # One UNet evaluation: k-diffusion style fractional timestep, non-square latent.
        latent = torch.randn((2, 4, 16, 12), generator=gen, dtype=d)
        context = torch.randn((2, 77, spec["unet"]["cross_attention_dim"]), generator=gen, dtype=d)
        ref["unet_latent"] = latent
        ref["unet_context"] = context
        ref["unet_timestep"] = torch.tensor([421.375], dtype=d)
        ref["unet_out"] = unet(latent, 421.375, encoder_hidden_states=context).sample
        ref["unet_out_f32"] = (
            unet.float()(latent.float(), 421.375, encoder_hidden_states=context.float()).sample.double()
        )
        unet.to(d)
        # VAE: decode a latent, encode an image (mean and std of the latent distribution).
        z = torch.randn((1, 4, 6, 5), generator=gen, dtype=d)
        ref["vae_latent"] = z
        ref["vae_decoded"] = vae.decode(z).sample
        img = torch.rand((1, 3, 48, 40), generator=gen, dtype=d) * 2 - 1
        ref["vae_image"] = img
        dist = vae.encode(img).latent_dist
        ref["vae_mean"] = dist.mean
        ref["vae_std"] = dist.std
        # A latent whose sides do not halve evenly (13x10 at the tiny UNet's two levels, like a
        # 520x400 image at SD's four): A1111 upsamples by two and convolves, then resizes to the
        # skip connection before concatenating; diffusers upsamples straight to that size.
        odd = torch.randn((2, 4, 13, 10), generator=gen, dtype=d)
        ref["unet_odd_latent"] = odd
        ref["unet_odd_out_diffusers"] = unet(odd, 421.375, encoder_hidden_states=context).sample
        ref["unet_odd_out"] = a1111_unet(unet, odd, 421.375, context)
        gap = (ref["unet_odd_out"] - ref["unet_odd_out_diffusers"]).abs().max() / ref["unet_odd_out"].abs().max()
        print(f"  odd latent: A1111 and diffusers up paths differ by {gap.item():.2e}")
        assert gap > 1e-3
    for k in list(ref):
        if ref[k].is_floating_point():
            ref[k] = ref[k].to(d).contiguous()
    e = (ref["unet_out_f32"] - ref["unet_out"]).abs().max() / ref["unet_out"].abs().max()
    print(f"{spec['name']}: torch fp32 vs fp64 UNet, max abs diff / max abs = {e.item():.2e}")
    for k in ("text_last", "text_skip2", "unet_out", "vae_decoded", "vae_mean"):
        print(f"  {k}: shape {tuple(ref[k].shape)}, std {ref[k].std().item():.3f}")
    return ref


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(ROOT, "target", "reference", "model"))
    ap.add_argument("--commit", action="store_true")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(2)
    for seed, spec in ((1, SD1), (2, SD2)):
        unet, vae, text, store = make(spec, seed)
        path = os.path.join(args.out, spec["name"] + ".safetensors")
        save_file(store, path)
        hf = reload(spec, unet, vae, text, path)
        ref = references(spec, unet, vae, text, hf)
        rpath = os.path.join(args.out, spec["name"] + "_ref.safetensors")
        save_file(ref, rpath)
        print(f"  wrote {path} ({os.path.getsize(path)} bytes), {rpath} ({os.path.getsize(rpath)} bytes)")
        npath = os.path.join(args.out, spec["name"] + "_diffusers_names.json")
        with open(npath, "w") as f:
            json.dump(diffusers_names(spec, path, unet, vae), f, sort_keys=True, separators=(",", ":"))
        written = [path, rpath, npath]
        if spec["name"].startswith("sd1"):
            # The UNet alone as a PyTorch Lightning `.ckpt` (zip pickle, `state_dict` nesting),
            # the way original checkpoints are distributed.
            cpath = os.path.join(args.out, "sd1_tiny_unet.ckpt")
            unet_only = {k: v for k, v in store.items() if k.startswith("model.diffusion_model.")}
            torch.save({"state_dict": unet_only, "global_step": 1}, cpath)
            written.append(cpath)
        if args.commit:
            dest = os.path.join(ROOT, "crates", "danlu-diffusion", "tests", "reference", "model")
            os.makedirs(dest, exist_ok=True)
            for p in written:
                shutil.copyfile(p, os.path.join(dest, os.path.basename(p)))


if __name__ == "__main__":
    main()
