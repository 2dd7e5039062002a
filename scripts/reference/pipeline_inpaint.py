#!/usr/bin/env python3
"""Reference outputs of A1111 inpainting on tiny SD1 checkpoints (64x64, a few steps).

Makes `sd1_tiny_inpaint_unet.safetensors`: the UNet of an inpainting checkpoint (9 input
channels: latent, mask, masked-image latent) with `sd1_tiny`'s shapes, LDM names, float16; the
Rust test puts it together with `sd1_tiny`'s text encoder and VAE. Then runs A1111's procedure
(`modules/processing.py`, A1111 1.10; no mask blur, "Inpaint area: Whole picture", masked
content "original", `inpainting_mask_weight` 1, `mask_round` on):

  * img2img with a mask: `init_latent` from the image (VAE sample, `torch.manual_seed(seed)` as in
    `pipeline_reference.py`); `latmask` = the mask as RGB resized to the latent size by Pillow's
    default filter (bicubic), `/ 255`, rounded; `mask = 1 - latmask`, `nmask = latmask`;
  * inpainting UNets get `inpainting_image_conditioning`: the mask rounded to 0/1 at full size,
    the masked image `lerp(image, image * (1 - mask), weight)` encoded (a VAE sample drawn right
    after the init latent's from the same generator), the mask resized to the latent by
    `F.interpolate` (nearest), `cat([mask, masked latent])` fed to the UNet as `c_concat` for
    both CFG halves;
  * `CFGDenoiser` blends each denoised prediction, `denoised * nmask + init_latent * mask`, and
    `sample` blends the result once more; the decoded picture gets the original pixels back
    outside the mask (`apply_overlay`, `mask_for_overlay = clip(mask * 2)`);
  * txt2img with an inpainting UNet: `txt2img_image_conditioning`, a 0.5 grey image encoded
    (a VAE sample after `torch.manual_seed(seed)`) behind a mask channel of ones.

Writes crates/danlu-diffusion/tests/reference/model/sd1_tiny_inpaint_unet.safetensors and
crates/danlu-diffusion/tests/reference/pipeline/inpaint_reference.{safetensors,json}.
Run: .venv/bin/python scripts/reference/pipeline_inpaint.py
"""

import json
import pathlib
import sys

import numpy as np
import torch
import k_diffusion.sampling as ks
from diffusers import UNet2DConditionModel
from k_diffusion.external import CompVisDenoiser
from PIL import Image
from safetensors.torch import load_file, save_file

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import model_make_tiny as tiny  # noqa: E402
import pipeline_reference as pref  # noqa: E402
import sampling_reference as sr  # noqa: E402

ROOT = HERE.parents[1]
MODEL_DIR = ROOT / "crates/danlu-diffusion/tests/reference/model"
OUT = ROOT / "crates/danlu-diffusion/tests/reference/pipeline"
W = H = 64
RUNS = [
    dict(name="inpaint_9ch_img2img", model="inpaint", sampler="Euler a", seed=4242, steps=8, cfg_scale=7.0,
         denoising_strength=0.75),
    dict(name="inpaint_plain_img2img", model="plain", sampler="Euler", seed=4343, steps=8, cfg_scale=7.0,
         denoising_strength=0.6),
    dict(name="inpaint_9ch_txt2img", model="inpaint", sampler="Euler a", seed=4444, steps=5, cfg_scale=7.0),
]


class Ldm:
    def __init__(self, unet, dtype):
        self.unet, self.dtype = unet, dtype
        self.alphas_cumprod = sr.ldm_alphas_cumprod()

    def apply_model(self, x, t, cond):
        ctx, concat = cond
        if concat is not None:
            x = torch.cat([x, concat.to(x.dtype)], dim=1)
        return self.unet(x.to(self.dtype), t.to(self.dtype), encoder_hidden_states=ctx).sample


class Cfg:
    """A1111 `CFGDenoiser.forward`: `c_concat` for both halves, then the mask blend."""

    def __init__(self, inner, cond, uncond, scale, concat, init_latent=None, mask=None, nmask=None):
        self.inner, self.cond, self.uncond, self.scale = inner, cond, uncond, scale
        self.concat, self.init_latent, self.mask, self.nmask = concat, init_latent, mask, nmask

    def __call__(self, x, sigma, **kwargs):
        x_in, sigma_in = torch.cat([x, x]), torch.cat([sigma, sigma])
        concat = None if self.concat is None else torch.cat([self.concat, self.concat])
        out = self.inner(x_in, sigma_in, cond=(torch.cat([self.cond, self.uncond]), concat))
        cond, uncond = out[:1], out[1:]
        denoised = uncond + (cond - uncond) * self.scale
        if self.mask is not None:
            denoised = denoised * self.nmask + self.init_latent * self.mask
        return denoised


def vae_sample(vae, pixels, dtype):
    dist = vae.encode(pixels.to(dtype)).latent_dist
    return pref.SCALE_FACTOR * (dist.mean + dist.std * torch.randn(dist.mean.shape).to(dtype))


def make_inpaint_unet():
    gen = torch.Generator().manual_seed(9)
    unet = UNet2DConditionModel(sample_size=8, in_channels=9, out_channels=4, norm_num_groups=32,
                                **tiny.SD1["unet"])
    tiny.scale_weights(unet, gen)
    store = {k: v.detach().contiguous().to(torch.float16)
             for k, v in tiny.unet_to_ldm(unet.state_dict(), dict(unet.config)).items()}
    path = MODEL_DIR / "sd1_tiny_inpaint_unet.safetensors"
    save_file(store, str(path))
    # Back through diffusers' converter, as the other tiny models.
    import diffusers.loaders.single_file_utils as sfu
    got = sfu.convert_ldm_unet_checkpoint(load_file(str(path)), dict(unet.config))
    unet.load_state_dict({k: v.float() for k, v in got.items()})
    return unet


def run(params, nets, dtype, init_u8, mask_u8):
    unet, vae, text = nets
    cond = pref.encode(text, pref.PROMPT, 1, dtype)
    uncond = pref.encode(text, pref.NEGATIVE, 1, dtype)
    ldm = Ldm(unet, dtype)
    wrap = CompVisDenoiser(ldm)
    seed, steps = params["seed"], params["steps"]
    rng = sr.Rng([seed], shape=(4, H // 8, W // 8))
    noise = rng.next()
    inpaint_model = params["model"] == "inpaint"
    fn = {"Euler a": ks.sample_euler_ancestral, "Euler": ks.sample_euler}[params["sampler"]]
    kw = {"noise_sampler": lambda s, sn: rng.next().to(dtype)} if params["sampler"] == "Euler a" else {}
    sigmas = wrap.get_sigmas(steps)
    if "denoising_strength" not in params:
        # txt2img_image_conditioning: grey 0.5 encoded, a mask channel of ones in front.
        torch.manual_seed(seed)
        grey = torch.ones(1, 3, H, W, dtype=dtype) * 0.5
        ic = vae_sample(vae, grey * 2 - 1, dtype)
        ic = torch.nn.functional.pad(ic, (0, 0, 0, 0, 1, 0), value=1.0)
        model = Cfg(wrap, cond, uncond, params["cfg_scale"], ic)
        return fn(model, noise.to(dtype) * sigmas[0], sigmas, disable=True, **kw), None
    image = torch.from_numpy(np.moveaxis(init_u8.astype(np.float32) / 255.0, 2, 0)[None]).to(dtype)
    torch.manual_seed(seed)
    init_latent = vae_sample(vae, image * 2 - 1, dtype)
    latmask = Image.fromarray(mask_u8).convert("RGB").resize((W // 8, H // 8))
    latmask = np.moveaxis(np.array(latmask, dtype=np.float32), 2, 0) / 255
    latmask = np.around(latmask[0])
    latmask = np.tile(latmask[None], (4, 1, 1))
    mask = torch.asarray(1.0 - latmask).to(dtype)
    nmask = torch.asarray(latmask).to(dtype)
    ic = None
    if inpaint_model:
        cm = torch.round(torch.from_numpy(mask_u8.astype(np.float32) / 255.0)[None, None]).to(dtype)
        src = image * 2 - 1
        masked = torch.lerp(src, src * (1.0 - cm), 1.0)
        ic_lat = vae_sample(vae, masked, dtype)
        cm = torch.nn.functional.interpolate(cm, size=ic_lat.shape[-2:])
        ic = torch.cat([cm, ic_lat], dim=1)
    t_enc = int(min(params["denoising_strength"], 0.999) * steps)
    sigmas = sigmas[steps - t_enc - 1:]
    x = init_latent + noise.to(dtype) * sigmas[0]
    model = Cfg(wrap, cond, uncond, params["cfg_scale"], ic, init_latent, mask, nmask)
    samples = fn(model, x, sigmas, disable=True, **kw)
    return samples * nmask + init_latent * mask, init_latent


def overlay(generated_u8, init_u8, mask_u8):
    """A1111 `apply_overlay` with `mask_for_overlay = clip(mask * 2)` (Pillow compositing)."""
    for_overlay = Image.fromarray(np.clip(mask_u8.astype(np.float32) * 2, 0, 255).astype(np.uint8))
    from PIL import ImageOps
    masked = Image.new("RGBa", (W, H))
    masked.paste(Image.fromarray(init_u8).convert("RGBA").convert("RGBa"), mask=ImageOps.invert(for_overlay.convert("L")))
    out = Image.fromarray(generated_u8).convert("RGBA")
    out.alpha_composite(masked.convert("RGBA"))
    return np.asarray(out.convert("RGB"))


def main():
    torch.set_num_threads(2)
    unet, vae, text, _ = tiny.make(tiny.SD1, 1)
    tiny.reload(tiny.SD1, unet, vae, text, str(MODEL_DIR / "sd1_tiny.safetensors"))
    inpaint_unet = make_inpaint_unet()
    init_u8 = np.random.default_rng(6).integers(0, 256, (H, W, 3), dtype=np.uint8)
    mask_u8 = np.zeros((H, W), dtype=np.uint8)
    mask_u8[24:56, 16:48] = 255
    tensors = {"init": torch.from_numpy(init_u8.copy()), "mask": torch.from_numpy(mask_u8.copy())}
    with torch.no_grad():
        for dtype in (torch.float64, torch.float32):
            suffix = "" if dtype == torch.float64 else "_f32"
            for params in RUNS:
                u = inpaint_unet if params["model"] == "inpaint" else unet
                nets = (u.to(dtype).eval(), vae.to(dtype).eval(), text.to(dtype).eval())
                latent, _ = run(params, nets, dtype, init_u8, mask_u8)
                tensors[params["name"] + "_latent" + suffix] = latent.to(torch.float64).contiguous()
                if dtype == torch.float64:
                    image = pref.to_uint8(pref.decode(vae, latent))[0]
                    if "denoising_strength" in params:
                        image = overlay(image, init_u8, mask_u8)
                    tensors[params["name"] + "_image"] = torch.from_numpy(image.copy())[None]
    for params in RUNS:
        ref, f32 = tensors[params["name"] + "_latent"], tensors[params["name"] + "_latent_f32"]
        gap = ((f32 - ref).abs().max() / ref.abs().max()).item()
        print(f"{params['name']}: torch float32 vs float64, max abs diff / max abs = {gap:.2e}")
    save_file(tensors, str(OUT / "inpaint_reference.safetensors"))
    meta = {"prompt": pref.PROMPT, "negative_prompt": pref.NEGATIVE, "width": W, "height": H, "runs": RUNS}
    (OUT / "inpaint_reference.json").write_text(json.dumps(meta, indent=1))
    print("wrote", OUT / "inpaint_reference.safetensors")


if __name__ == "__main__":
    main()
