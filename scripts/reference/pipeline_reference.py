#!/usr/bin/env python3
"""Reference outputs of complete short txt2img and img2img runs on the tiny SD1 checkpoint.

Runs A1111's procedure on `crates/danlu-diffusion/tests/reference/model/sd1_tiny.safetensors`
(loaded through diffusers' own single-file converters, via `model_make_tiny.py`):

  * prompt and negative prompt through A1111's tokenizer and chunking (`prompt_reference.py`:
    `Sd1Tokenizer`, `tokenize_line`), each 77-token chunk through the CLIP text model at the clip
    skip (`sd_hijack_clip.py` `encode_with_transformers`), emphasis "Original"
    (`sd_emphasis.py`: multiply, then restore the mean), chunks concatenated along tokens;
  * A1111's `CFGDenoiser` around k-diffusion's `CompVisDenoiser` on the model's float32
    `alphas_cumprod` (prompt and negative in one batch when their lengths agree, two UNet calls
    otherwise, the default `pad_cond_uncond = False`);
  * initial noise from A1111's `ImageRNG` on CPU: one `torch.Generator().manual_seed(seed + i)`
    per image, the first `randn((4, h, w))` is the latent, later draws are the ancestral noise;
  * k-diffusion's `sample_euler_ancestral`, `sample_euler`, `sample_heun`, `sample_lms`,
    `sample_dpmpp_2m`, `sample_dpmpp_sde`, `sample_dpmpp_2m_sde`, `sample_dpmpp_3m_sde` on A1111's schedules (Automatic,
    Karras, Exponential, Uniform), A1111's DDIM (`sampling_reference.ddim`) and UniPC
    (`sampling_unipc.py`); the SDE samplers with A1111's Brownian-tree noise
    (`BrownianTreeNoiseSampler` seeded with the batch's seeds, on the float32 latent); then `decode_first_stage` (`1 / scale_factor * z`) and
    A1111's 8-bit conversion (`clamp((x + 1) / 2, 0, 1)`, `255. * x`, `astype(np.uint8)`);
  * SD 2.x (`sd2_tiny.safetensors`): the OpenCLIP tower's penultimate layer, padding with 0
    after the first end token, k-diffusion's `CompVisVDenoiser` (v-prediction);
  * img2img: the init image as `np.float32 / 255`, `* 2 - 1`, VAE encode, the latent sampled as
    `mean + std * torch.randn(mean.shape)` after `torch.manual_seed(seed)` (ldm
    `DiagonalGaussianDistribution.sample`, A1111 `images_tensor_to_samples`; A1111 leaves the
    global generator unseeded, danlu seeds it with the job's seed), `* scale_factor`, then
    A1111's `sample_img2img` (`t_enc = int(strength * steps)`, `sigmas[steps - t_enc - 1:]`).

The networks run in float64 (the reference) and in float32 (what A1111 runs on a CPU); the
script prints the gap between the two. Noise and sigmas are float32 in both, as in A1111.

Writes crates/danlu-diffusion/tests/reference/pipeline/pipeline_reference.safetensors
(`<run>_latent` float64 `[B, 4, h, w]`, `<run>_latent_f32`, `<run>_image` uint8 `[B, H, W, 3]`,
`img2img_init` uint8) and pipeline_reference.json (the parameters of each run).

Made with torch 2.15, diffusers, k-diffusion, transformers, open_clip (see requirements.txt).
Run: .venv/bin/python scripts/reference/pipeline_reference.py
"""

import json
import os
import pathlib
import sys

import numpy as np
import torch
import k_diffusion.sampling as ks
from k_diffusion.external import CompVisDenoiser, CompVisVDenoiser
from safetensors.torch import save_file

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import model_make_tiny as tiny  # noqa: E402
import prompt_reference as pr  # noqa: E402
import sampling_reference as sr  # noqa: E402

ROOT = HERE.parents[1]
CKPT = ROOT / "crates/danlu-diffusion/tests/reference/model/sd1_tiny.safetensors"
OUT = ROOT / "crates/danlu-diffusion/tests/reference/pipeline"
SCALE_FACTOR = 0.18215

# The prompt keeps A1111's emphasis well conditioned on this random model: "Original" divides by
# the mean of the weighted encoder output, which for a random text tower sits near zero, so
# some prompts flip its sign (a ratio of -9 for "a (red:1.3) cat, [blurry] photo of ((a house))"
# at clip skip 1) and then float32 and float64 runs part after one step. For this prompt the
# ratio is 1.006 at clip skip 1 and 1.003 at clip skip 2.
PROMPT = "(masterpiece:1.2), a cat sitting on a (wooden:0.8) table"
NEGATIVE = "lowres, bad anatomy"
LONG_NEGATIVE = ", ".join(f"bad thing {i}" for i in range(40))
RUNS = [
    dict(name="euler_a_batch2", sampler="Euler a", seed=1234, batch_size=2, steps=6, cfg_scale=7.0,
         clip_skip=1, negative_prompt=NEGATIVE),
    dict(name="dpmpp_2m_karras", sampler="DPM++ 2M Karras", seed=42, batch_size=1, steps=6, cfg_scale=5.5,
         clip_skip=2, negative_prompt=NEGATIVE),
    dict(name="ddim", sampler="DDIM", seed=7, batch_size=1, steps=5, cfg_scale=7.0, clip_skip=1,
         negative_prompt=NEGATIVE),
    dict(name="euler_long_negative", sampler="Euler", seed=99, batch_size=1, steps=4, cfg_scale=7.0,
         clip_skip=1, negative_prompt=LONG_NEGATIVE),
    dict(name="heun", sampler="Heun", seed=11, batch_size=1, steps=4, cfg_scale=7.0, clip_skip=1,
         negative_prompt=NEGATIVE),
    dict(name="lms_karras", sampler="LMS Karras", seed=12, batch_size=1, steps=6, cfg_scale=7.0,
         clip_skip=1, negative_prompt=NEGATIVE),
    dict(name="dpmpp_sde_karras_batch2", sampler="DPM++ SDE Karras", seed=13, batch_size=2, steps=4,
         cfg_scale=7.0, clip_skip=1, negative_prompt=NEGATIVE),
    dict(name="dpmpp_sde_uniform", sampler="DPM++ SDE Uniform", seed=14, batch_size=1, steps=4,
         cfg_scale=7.0, clip_skip=1, negative_prompt=NEGATIVE),
    dict(name="dpmpp_2m_sde", sampler="DPM++ 2M SDE", seed=15, batch_size=1, steps=5, cfg_scale=7.0,
         clip_skip=1, negative_prompt=NEGATIVE),
    dict(name="unipc", sampler="UniPC", seed=16, batch_size=1, steps=5, cfg_scale=7.0, clip_skip=1,
         negative_prompt=NEGATIVE),
    dict(name="euler_exponential", sampler="Euler Exponential", seed=17, batch_size=1, steps=4,
         cfg_scale=7.0, clip_skip=1, negative_prompt=NEGATIVE),
    dict(name="dpmpp_3m_sde", sampler="DPM++ 3M SDE", seed=19, batch_size=1, steps=6, cfg_scale=7.0,
         clip_skip=1, negative_prompt=NEGATIVE),
    dict(name="dpmpp_2m_uniform", sampler="DPM++ 2M Uniform", seed=18, batch_size=1, steps=5,
         cfg_scale=7.0, clip_skip=1, negative_prompt=NEGATIVE),
]
IMG2IMG = dict(name="img2img_euler_a", sampler="Euler a", seed=777, batch_size=1, steps=8, cfg_scale=7.0,
               clip_skip=1, negative_prompt=NEGATIVE, denoising_strength=0.6)
# img2img with Brownian-tree noise: the tree spans the sigmas left after the strength cut.
IMG2IMG_SDE = dict(name="img2img_dpmpp_2m_sde", sampler="DPM++ 2M SDE Karras", seed=778, batch_size=1, steps=8,
                   cfg_scale=7.0, clip_skip=1, negative_prompt=NEGATIVE, denoising_strength=0.5)
# SD 2.x: OpenCLIP text tower at its penultimate layer, `id_pad = 0`, v-prediction.
SD2_RUN = dict(name="sd2_v_euler_a", sampler="Euler a", seed=321, batch_size=1, steps=5, cfg_scale=6.0,
               clip_skip=1, negative_prompt=NEGATIVE, v_prediction=True)
SD2_CKPT = ROOT / "crates/danlu-diffusion/tests/reference/model/sd2_tiny.safetensors"
WIDTH = HEIGHT = 64
# A1111 label -> (k-diffusion function, what "Automatic" schedules, step noise); A1111 1.10
# `sd_samplers_kdiffusion.samplers_k_diffusion` (options `scheduler`, `brownian_noise`).
K_SAMPLERS = {
    "Euler a": (ks.sample_euler_ancestral, "Uniform", "ancestral"),
    "Euler": (ks.sample_euler, "Uniform", None),
    "Heun": (ks.sample_heun, "Uniform", None),
    "LMS": (ks.sample_lms, "Uniform", None),
    "DPM++ 2M": (ks.sample_dpmpp_2m, "Karras", None),
    "DPM++ SDE": (ks.sample_dpmpp_sde, "Karras", "brownian"),
    "DPM++ 2M SDE": (ks.sample_dpmpp_2m_sde, "Exponential", "brownian"),
    "DPM++ 3M SDE": (ks.sample_dpmpp_3m_sde, "Exponential", "brownian"),
}
# `discard_next_to_last_sigma`: one more step scheduled, the penultimate sigma dropped.
DISCARD_PENULTIMATE = {"DPM++ 3M SDE"}


class Ldm:
    """What k-diffusion's CompVisDenoiser needs: `alphas_cumprod` and `apply_model`."""

    def __init__(self, unet, dtype):
        self.unet = unet
        self.dtype = dtype
        self.alphas_cumprod = sr.ldm_alphas_cumprod()

    def apply_model(self, x, t, cond):
        out = self.unet(x.to(self.dtype), t.to(self.dtype), encoder_hidden_states=cond).sample
        return out


class A1111Cfg:
    """A1111 `CFGDenoiser.forward` for one prompt of weight 1 (no AND, no mask)."""

    def __init__(self, inner, cond, uncond, scale):
        self.inner, self.cond, self.uncond, self.scale = inner, cond, uncond, scale

    def __call__(self, x, sigma, **kwargs):
        b = x.shape[0]
        x_in, sigma_in = torch.cat([x, x]), torch.cat([sigma, sigma])
        if self.cond.shape[1] == self.uncond.shape[1]:
            out = self.inner(x_in, sigma_in, cond=torch.cat([self.cond, self.uncond]))
        else:
            out = torch.cat([
                self.inner(x_in[:b], sigma_in[:b], cond=self.cond),
                self.inner(x_in[b:], sigma_in[b:], cond=self.uncond),
            ])
        cond, uncond = out[:b], out[b:]
        return uncond + (cond - uncond) * self.scale


class EpsCfg:
    """A1111 `CFGDenoiserTimesteps` around `CompVisTimestepsDenoiser` (DDIM)."""

    def __init__(self, ldm, cond, uncond, scale):
        self.ldm, self.cond, self.uncond, self.scale = ldm, cond, uncond, scale

    def __call__(self, x, t):
        b = x.shape[0]
        x_in, t_in = torch.cat([x, x]), torch.cat([t, t])
        out = self.ldm.apply_model(x_in, t_in, torch.cat([self.cond, self.uncond]))
        return out[b:] + (out[:b] - out[b:]) * self.scale


def encode(text_model, prompt, clip_skip, dtype, sd2=False):
    """A1111 `FrozenCLIPEmbedderWithCustomWordsBase.forward` for one prompt; SD 2.x pads with
    0 after the first end token and takes OpenCLIP's penultimate layer whatever the clip skip
    (`sd_hijack_open_clip.py`, ldm `FrozenOpenCLIPEmbedder(layer="penultimate")`)."""
    _, _, chunks, _ = pr.tokenize_line(pr.Sd1Tokenizer(), prompt)
    zs = []
    for chunk in chunks:
        ids = pr.sd2_ids(chunk["tokens"]) if sd2 else chunk["tokens"]
        tokens = torch.tensor([ids], dtype=torch.long)
        if sd2:
            z = tiny.openclip_hidden(text_model, tokens, 1)
        elif clip_skip <= 1:
            z = text_model(input_ids=tokens).last_hidden_state
        else:
            out = text_model(input_ids=tokens, output_hidden_states=True)
            z = text_model.final_layer_norm(out.hidden_states[-clip_skip])
        mult = torch.tensor([chunk["multipliers"]], dtype=torch.float32)
        original_mean = z.mean()
        z = z * mult.reshape(mult.shape + (1,)).expand(z.shape)
        new_mean = z.mean()
        z = z * (original_mean / new_mean)
        zs.append(z)
    return torch.hstack(zs)


def to_uint8(x):
    """A1111: clamp((x + 1) / 2), 255. * x, astype(np.uint8); float32 as A1111 (`.float()`)."""
    x = torch.clamp((x.float() + 1.0) / 2.0, min=0.0, max=1.0)
    x = 255. * np.moveaxis(x.cpu().numpy(), 1, 3)
    return x.astype(np.uint8)


def run(nets, params, dtype, init=None, sd2=False):
    unet, vae, text = nets
    b = params["batch_size"]
    cond = encode(text, PROMPT, params["clip_skip"], dtype, sd2).repeat(b, 1, 1)
    uncond = encode(text, params["negative_prompt"], params["clip_skip"], dtype, sd2).repeat(b, 1, 1)
    ldm = Ldm(unet, dtype)
    wrap = CompVisVDenoiser(ldm) if params.get("v_prediction") else CompVisDenoiser(ldm)
    seeds = [params["seed"] + i for i in range(b)]
    rng = sr.Rng(seeds, shape=(4, HEIGHT // 8, WIDTH // 8))
    noise = rng.next()
    steps, name = params["steps"], params["sampler"]
    smin, smax = wrap.sigmas[0].item(), wrap.sigmas[-1].item()
    model = A1111Cfg(wrap, cond, uncond, params["cfg_scale"])
    if name == "DDIM":
        timesteps = torch.clip(torch.asarray(list(range(0, 1000, 1000 // steps))) + 1, 0, 999)
        eps = EpsCfg(ldm, cond, uncond, params["cfg_scale"])
        return sr.ddim(eps, noise.to(dtype), timesteps, ldm.alphas_cumprod, rng, eta=0.0)
    if name == "UniPC":
        # A1111 sd_samplers_timesteps_impl.unipc: as many steps as A1111's DDIM timesteps.
        from sampling_unipc import NoiseScheduleVP, UniPC
        n_ts = len(range(0, 1000, 1000 // steps))
        eps = EpsCfg(ldm, cond, uncond, params["cfg_scale"])
        return UniPC(eps, NoiseScheduleVP(ldm.alphas_cumprod)).sample(noise.to(dtype), steps=n_ts)
    base, schedule = name, None
    for label in ("Karras", "Exponential", "Uniform"):
        if name.endswith(" " + label):
            base, schedule = name[: -len(label) - 1], label
    fn, automatic, noise_kind = K_SAMPLERS[base]
    schedule = schedule or automatic
    n = steps + 1 if base in DISCARD_PENULTIMATE else steps
    if schedule == "Karras":
        sigmas = ks.get_sigmas_karras(n, smin, smax, rho=7.0)
    elif schedule == "Exponential":
        sigmas = ks.get_sigmas_exponential(n, smin, smax)
    else:
        sigmas = wrap.get_sigmas(n)
    if base in DISCARD_PENULTIMATE:
        sigmas = torch.cat([sigmas[:-2], sigmas[-1:]])
    if init is None:
        x = noise.to(dtype) * sigmas[0]
    else:
        t_enc = int(min(params["denoising_strength"], 0.999) * steps)
        sigmas = sigmas[steps - t_enc - 1:]
        x = init + noise.to(dtype) * sigmas[0]
    if noise_kind == "ancestral":
        kw = {"noise_sampler": lambda s, sn: rng.next().to(dtype)}
    elif noise_kind == "brownian":
        # A1111 `create_noise_sampler`: one tree per image seeded with its seed, over the
        # positive range of the sigmas actually sampled, on the float32 latent A1111 samples.
        tree = ks.BrownianTreeNoiseSampler(noise.float(), sigmas[sigmas > 0].min(), sigmas.max(), seed=seeds)
        kw = {"noise_sampler": lambda s, sn: tree(s, sn).to(dtype)}
    else:
        kw = {}
    return fn(model, x, sigmas, disable=True, **kw)


def init_latent(vae, image_u8, seed, dtype):
    image = torch.from_numpy(np.moveaxis(image_u8.astype(np.float32) / 255.0, 2, 0)[None]).to(dtype)
    image = image * 2 - 1
    dist = vae.encode(image).latent_dist
    torch.manual_seed(seed)
    z = dist.mean + dist.std * torch.randn(dist.mean.shape).to(dtype)
    return SCALE_FACTOR * z


def decode(vae, latents):
    return torch.stack([vae.decode(1. / SCALE_FACTOR * latents[i:i + 1]).sample[0] for i in range(len(latents))])


def main():
    torch.set_num_threads(2)
    unet, vae, text, _ = tiny.make(tiny.SD1, 1)
    tiny.reload(tiny.SD1, unet, vae, text, str(CKPT))
    OUT.mkdir(parents=True, exist_ok=True)
    init_u8 = np.random.default_rng(5).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    tensors = {"img2img_init": torch.from_numpy(init_u8.copy())}
    results = {}
    with torch.no_grad():
        for dtype in (torch.float64, torch.float32):
            nets = (unet.to(dtype).eval(), vae.to(dtype).eval(), text.to(dtype).eval())
            suffix = "" if dtype == torch.float64 else "_f32"
            for params in RUNS + [IMG2IMG, IMG2IMG_SDE]:
                init = None
                if "denoising_strength" in params:
                    init = init_latent(vae, init_u8, params["seed"], dtype)
                latent = run(nets, params, dtype, init)
                tensors[params["name"] + "_latent" + suffix] = latent.to(torch.float64).contiguous()
                if dtype == torch.float64:
                    image = to_uint8(decode(vae, latent))
                    tensors[params["name"] + "_image"] = torch.from_numpy(image.copy())
                results.setdefault(params["name"], {})[str(dtype)] = latent
    # SD 2.x, v-prediction.
    unet2, vae2, text2, _ = tiny.make(tiny.SD2, 2)
    tiny.reload(tiny.SD2, unet2, vae2, text2, str(SD2_CKPT))
    with torch.no_grad():
        for dtype in (torch.float64, torch.float32):
            nets = (unet2.to(dtype).eval(), vae2.to(dtype).eval(), text2.to(dtype).eval())
            suffix = "" if dtype == torch.float64 else "_f32"
            latent = run(nets, SD2_RUN, dtype, sd2=True)
            tensors[SD2_RUN["name"] + "_latent" + suffix] = latent.to(torch.float64).contiguous()
            if dtype == torch.float64:
                tensors[SD2_RUN["name"] + "_image"] = torch.from_numpy(to_uint8(decode(vae2, latent)).copy())
            results.setdefault(SD2_RUN["name"], {})[str(dtype)] = latent
    for name, r in results.items():
        ref, f32 = r["torch.float64"], r["torch.float32"]
        gap = ((f32.double() - ref).abs().max() / ref.abs().max()).item()
        print(f"{name}: torch float32 vs float64 final latent, max abs diff / max abs = {gap:.2e}")
    save_file(tensors, str(OUT / "pipeline_reference.safetensors"))
    meta = {"prompt": PROMPT, "width": WIDTH, "height": HEIGHT, "runs": RUNS, "img2img": IMG2IMG, "img2img_sde": IMG2IMG_SDE, "sd2": SD2_RUN}
    with open(OUT / "pipeline_reference.json", "w") as f:
        json.dump(meta, f, indent=1)
    print("wrote", OUT, sum(os.path.getsize(p) for p in OUT.iterdir()), "bytes")


if __name__ == "__main__":
    main()
