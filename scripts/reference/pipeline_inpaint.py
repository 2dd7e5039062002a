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

Then `inpaint_masks_reference.*`: A1111's mask blur (`cv2.GaussianBlur` with
`(2 * int(2.5 * blur + 0.5) + 1, 1)`, then `(1, k)`), `masking.fill`, `apply_overlay` with a
blurred mask on their own, and whole float64 runs with mask blur, masked content `fill` (0),
`latent noise` (2, the seed's first noise, A1111 `create_random_tensors`), `latent nothing` (3)
and `inpainting_mask_invert`; for every mode but "original" the picture is filled
(`masking.fill`) before it is encoded and conditioned.

Writes crates/danlu-diffusion/tests/reference/model/sd1_tiny_inpaint_unet.safetensors and
crates/danlu-diffusion/tests/reference/pipeline/inpaint_reference.{safetensors,json},
inpaint_masks_reference.{safetensors,json}.
Run with Pillow 9.5 (A1111's pin) and opencv-python-headless:
PYTHONPATH=/path/to/pillow-9.5 .venv/bin/python scripts/reference/pipeline_inpaint.py
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
# Mask blur, masked content and mask invert (`inpaint_masks_reference.*`).
MASK_RUNS = [
    dict(name="masks_plain_fill", model="plain", sampler="Euler", seed=5151, steps=6, cfg_scale=7.0,
         denoising_strength=0.75, mask_blur=4, inpainting_fill=0, inpainting_mask_invert=0),
    dict(name="masks_plain_latent_noise", model="plain", sampler="Euler a", seed=5252, steps=6, cfg_scale=7.0,
         denoising_strength=0.8, mask_blur=4, inpainting_fill=2, inpainting_mask_invert=0),
    dict(name="masks_plain_latent_nothing_inverted", model="plain", sampler="Euler", seed=5353, steps=6,
         cfg_scale=7.0, denoising_strength=0.9, mask_blur=3, inpainting_fill=3, inpainting_mask_invert=1),
    dict(name="masks_9ch_fill_blur", model="inpaint", sampler="Euler a", seed=5454, steps=6, cfg_scale=7.0,
         denoising_strength=0.75, mask_blur=4, inpainting_fill=0, inpainting_mask_invert=0),
    dict(name="masks_9ch_original_blur", model="inpaint", sampler="Euler", seed=5555, steps=6, cfg_scale=7.0,
         denoising_strength=0.7, mask_blur=6, inpainting_fill=1, inpainting_mask_invert=0),
]
# Blur-only cases on a 48x40 mask: (blur_x, blur_y); 64 on so small a mask reflects many times.
BLURS = [(4, 4), (1, 1), (3, 7), (0, 5), (64, 64)]


def mask_blur(mask_u8, blur_x, blur_y):
    """A1111 `StableDiffusionProcessingImg2Img.init`: the 8-bit mask through OpenCV."""
    import cv2
    np_mask = mask_u8
    if blur_x > 0:
        k = 2 * int(2.5 * blur_x + 0.5) + 1
        np_mask = cv2.GaussianBlur(np_mask, (k, 1), blur_x)
    if blur_y > 0:
        k = 2 * int(2.5 * blur_y + 0.5) + 1
        np_mask = cv2.GaussianBlur(np_mask, (1, k), blur_y)
    return np_mask


def masking_fill(image_u8, mask_u8):
    """A1111 `modules/masking.py` `fill`, with Pillow (A1111 pins 9.5)."""
    from PIL import ImageFilter, ImageOps
    image = Image.fromarray(image_u8)
    mask = Image.fromarray(mask_u8)
    image_mod = Image.new('RGBA', (image.width, image.height))
    image_masked = Image.new('RGBa', (image.width, image.height))
    image_masked.paste(image.convert("RGBA").convert("RGBa"), mask=ImageOps.invert(mask.convert('L')))
    image_masked = image_masked.convert('RGBa')
    for radius, repeats in [(256, 1), (64, 1), (16, 2), (4, 4), (2, 2), (0, 1)]:
        blurred = image_masked.filter(ImageFilter.GaussianBlur(radius)).convert('RGBA')
        for _ in range(repeats):
            image_mod.alpha_composite(blurred)
    return np.asarray(image_mod.convert("RGB")).copy()


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
    if params.get("inpainting_mask_invert"):
        mask_u8 = 255 - mask_u8
    mask_u8 = mask_blur(mask_u8, params.get("mask_blur", 0), params.get("mask_blur", 0))
    fill = params.get("inpainting_fill", 1)
    source_u8 = init_u8 if fill == 1 else masking_fill(init_u8, mask_u8)
    image = torch.from_numpy(np.moveaxis(source_u8.astype(np.float32) / 255.0, 2, 0)[None]).to(dtype)
    torch.manual_seed(seed)
    init_latent = vae_sample(vae, image * 2 - 1, dtype)
    latmask = Image.fromarray(mask_u8).convert("RGB").resize((W // 8, H // 8))
    latmask = np.moveaxis(np.array(latmask, dtype=np.float32), 2, 0) / 255
    latmask = np.around(latmask[0])
    latmask = np.tile(latmask[None], (4, 1, 1))
    mask = torch.asarray(1.0 - latmask).to(dtype)
    nmask = torch.asarray(latmask).to(dtype)
    if fill == 2:
        # `create_random_tensors(shape, all_seeds[:batch])`: the seed's first noise again.
        init_latent = init_latent * mask + sr.Rng([seed], shape=(4, H // 8, W // 8)).next().to(dtype) * nmask
    elif fill == 3:
        init_latent = init_latent * mask
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
    return samples * nmask + init_latent * mask, mask_u8


def overlay(generated_u8, init_u8, mask_u8):
    """A1111 `apply_overlay` with `mask_for_overlay = clip(mask * 2)` (Pillow compositing)."""
    H, W = mask_u8.shape
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

    # Masks: blur, fill and overlay on their own, then whole runs.
    yy, xx = np.mgrid[0:40, 0:48]
    small = np.where((xx - 20) ** 2 + (yy - 18) ** 2 < 150, 255, 0).astype(np.uint8)
    small[30:, 40:] = np.random.default_rng(7).integers(0, 256, (10, 8), dtype=np.uint8)
    small_rgb = np.random.default_rng(8).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    masks = {"small_mask": torch.from_numpy(small.copy()), "small_rgb": torch.from_numpy(small_rgb.copy())}
    for bx, by in BLURS:
        masks[f"blur_{bx}_{by}"] = torch.from_numpy(mask_blur(small, bx, by).copy())
    blurred = mask_blur(small, 4, 4)
    masks["fill_small"] = torch.from_numpy(masking_fill(small_rgb, blurred))
    generated = np.random.default_rng(9).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    masks["overlay_small"] = torch.from_numpy(overlay(generated, small_rgb, blurred).copy())
    masks["overlay_generated"] = torch.from_numpy(generated.copy())
    with torch.no_grad():
        for params in MASK_RUNS:
            u = inpaint_unet if params["model"] == "inpaint" else unet
            nets = (u.to(torch.float64).eval(), vae.to(torch.float64).eval(), text.to(torch.float64).eval())
            latent, used_mask = run(params, nets, torch.float64, init_u8, mask_u8)
            masks[params["name"] + "_latent"] = latent.contiguous()
            image = pref.to_uint8(pref.decode(vae, latent))[0]
            masks[params["name"] + "_image"] = torch.from_numpy(overlay(image, init_u8, used_mask).copy())[None]
    save_file(masks, str(OUT / "inpaint_masks_reference.safetensors"))
    meta = {"prompt": pref.PROMPT, "negative_prompt": pref.NEGATIVE, "width": W, "height": H,
            "blurs": BLURS, "runs": MASK_RUNS}
    (OUT / "inpaint_masks_reference.json").write_text(json.dumps(meta, indent=1))
    print("wrote", OUT / "inpaint_masks_reference.safetensors")


if __name__ == "__main__":
    main()
