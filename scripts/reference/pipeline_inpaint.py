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

Then `inpaint_resized_reference.*`: masks of another size than the picture, in A1111's order
(`StableDiffusionProcessingImg2Img.init` without `inpaint_full_res`): inverted, blurred at their
own size, then `images.resize_image(p.resize_mode, image_mask, width, height)` (Lanczos for a
grey mask, `pipeline_resize.resize_image`); the prepared masks on their own and whole float64
runs with "Just resize", "Crop and resize" and "Resize and fill".

Then `inpaint_timesteps_reference.*`: float64 runs with A1111's timestep samplers (DDIM, PLMS,
UniPC; `modules/sd_samplers_timesteps.py` `CompVisSampler.sample_img2img`): `xi = init_latent *
sqrt(a) + noise * sqrt(1 - a)` at `timesteps[t_enc]`, the sampler on `timesteps[:t_enc]` (UniPC
from `t_start = timesteps[-1] / 1000 + 1 / 1000`); `CFGDenoiserTimesteps` has
`mask_before_denoising = True`, so every model input is blended `x * nmask + init_latent * mask`
(the clean init latent) and the predicted noise is not; `sample` blends the result once more.

Writes crates/danlu-diffusion/tests/reference/model/sd1_tiny_inpaint_unet.safetensors and
crates/danlu-diffusion/tests/reference/pipeline/inpaint_reference.{safetensors,json},
inpaint_masks_reference.{safetensors,json}, inpaint_resized_reference.{safetensors,json},
inpaint_timesteps_reference.{safetensors,json}; name sections (`base`, `masks`, `resized`,
`timesteps`) as arguments to write only those (the UNet file belongs to `base`).
Run with Pillow 9.5 (A1111's pin) and opencv-python-headless:
PYTHONPATH=/path/to/pillow-9.5 .venv/bin/python scripts/reference/pipeline_inpaint.py [SECTION...]
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
import pipeline_resize as prs  # noqa: E402
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
# A 48x40 mask for the 64x64 picture (`inpaint_resized_reference.*`): blurred, then resized.
RESIZED_RUNS = [
    dict(name="resized_plain_just_resize", model="plain", sampler="Euler", seed=6161, steps=6, cfg_scale=7.0,
         denoising_strength=0.75, mask_blur=4, inpainting_fill=1, inpainting_mask_invert=0, resize_mode=0),
    dict(name="resized_plain_crop_inverted", model="plain", sampler="Euler", seed=6262, steps=6, cfg_scale=7.0,
         denoising_strength=0.8, mask_blur=3, inpainting_fill=0, inpainting_mask_invert=1, resize_mode=1),
    dict(name="resized_9ch_fill", model="inpaint", sampler="Euler a", seed=6363, steps=6, cfg_scale=7.0,
         denoising_strength=0.75, mask_blur=5, inpainting_fill=1, inpainting_mask_invert=0, resize_mode=2),
]
# Timestep samplers with a mask (`inpaint_timesteps_reference.*`).
TIMESTEP_RUNS = [
    dict(name="ts_plain_ddim", model="plain", sampler="DDIM", seed=7171, steps=8, cfg_scale=7.0,
         denoising_strength=0.75, mask_blur=4, inpainting_fill=1, inpainting_mask_invert=0),
    dict(name="ts_plain_unipc", model="plain", sampler="UniPC", seed=7272, steps=8, cfg_scale=7.0,
         denoising_strength=0.75, mask_blur=4, inpainting_fill=1, inpainting_mask_invert=0),
    dict(name="ts_plain_plms_latent_nothing", model="plain", sampler="PLMS", seed=7373, steps=8, cfg_scale=7.0,
         denoising_strength=0.8, mask_blur=2, inpainting_fill=3, inpainting_mask_invert=0),
    dict(name="ts_9ch_ddim", model="inpaint", sampler="DDIM", seed=7474, steps=8, cfg_scale=7.0,
         denoising_strength=0.75, mask_blur=4, inpainting_fill=1, inpainting_mask_invert=0),
    dict(name="ts_9ch_unipc_fill", model="inpaint", sampler="UniPC", seed=7575, steps=8, cfg_scale=7.0,
         denoising_strength=0.9, mask_blur=4, inpainting_fill=0, inpainting_mask_invert=0),
]
TIMESTEP_SAMPLERS = ("DDIM", "PLMS", "UniPC")


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


def prepare_mask(mask_u8, params):
    """A1111 `StableDiffusionProcessingImg2Img.init` (whole picture): invert, blur at the mask's
    own size, then `images.resize_image(p.resize_mode, image_mask, width, height)`; the resized
    grey mask read back as `L` (every later use converts it so)."""
    if params.get("inpainting_mask_invert"):
        mask_u8 = 255 - mask_u8
    mask_u8 = mask_blur(mask_u8, params.get("mask_blur", 0), params.get("mask_blur", 0))
    if "resize_mode" in params:
        resized = prs.resize_image(params["resize_mode"], Image.fromarray(mask_u8), W, H)
        mask_u8 = np.asarray(resized.convert("L")).copy()
    return mask_u8


class EpsCfg:
    """A1111 `CFGDenoiserTimesteps` (`mask_before_denoising = True`): the model input blended
    `x * nmask + init_latent * mask` first, then the CFG of the predicted noise, no blend after."""

    def __init__(self, ldm, cond, uncond, scale, concat, init_latent, mask, nmask):
        self.ldm, self.cond, self.uncond, self.scale = ldm, cond, uncond, scale
        self.concat, self.init_latent, self.mask, self.nmask = concat, init_latent, mask, nmask

    def __call__(self, x, t):
        if self.mask is not None:
            x = x * self.nmask + self.init_latent * self.mask
        b = x.shape[0]
        x_in, t_in = torch.cat([x, x]), torch.cat([t, t])
        concat = None if self.concat is None else torch.cat([self.concat, self.concat])
        out = self.ldm.apply_model(x_in, t_in, (torch.cat([self.cond, self.uncond]), concat))
        return out[b:] + (out[:b] - out[b:]) * self.scale


def sample_timesteps(params, ldm, model, init_latent, noise):
    """A1111 `CompVisSampler.sample_img2img` with `sd_samplers_timesteps_impl` ddim/plms/unipc."""
    steps = params["steps"]
    t_enc = int(min(params["denoising_strength"], 0.999) * steps)
    timesteps = torch.clip(torch.asarray(list(range(0, 1000, 1000 // steps))) + 1, 0, 999)
    sched = timesteps[:t_enc]
    ac = ldm.alphas_cumprod
    xi = init_latent * torch.sqrt(ac[timesteps[t_enc]]) + noise * torch.sqrt(1 - ac[timesteps[t_enc]])
    if params["sampler"] == "DDIM":
        return sr.ddim(model, xi, sched, ac, None, eta=0.0)
    if params["sampler"] == "PLMS":
        return sr.plms(model, xi, sched, ac)
    from sampling_unipc import NoiseScheduleVP, UniPC
    ns = NoiseScheduleVP(ac)
    # `unipc(..., is_img2img=True)`: `t_start = timesteps[-1] / 1000 + 1 / 1000`, UniPC's `t_T`.
    ns.T = sched[-1] / 1000 + 1 / 1000
    return UniPC(model, ns).sample(xi, steps=len(sched))


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


def make_inpaint_unet(write=True):
    gen = torch.Generator().manual_seed(9)
    unet = UNet2DConditionModel(sample_size=8, in_channels=9, out_channels=4, norm_num_groups=32,
                                **tiny.SD1["unet"])
    tiny.scale_weights(unet, gen)
    store = {k: v.detach().contiguous().to(torch.float16)
             for k, v in tiny.unet_to_ldm(unet.state_dict(), dict(unet.config)).items()}
    import tempfile
    path = MODEL_DIR / "sd1_tiny_inpaint_unet.safetensors"
    if not write:
        path = pathlib.Path(tempfile.mkdtemp()) / "sd1_tiny_inpaint_unet.safetensors"
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
    fn = {"Euler a": ks.sample_euler_ancestral, "Euler": ks.sample_euler}.get(params["sampler"])
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
    mask_u8 = prepare_mask(mask_u8, params)
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
    if params["sampler"] in TIMESTEP_SAMPLERS:
        model = EpsCfg(ldm, cond, uncond, params["cfg_scale"], ic, init_latent, mask, nmask)
        samples = sample_timesteps(params, ldm, model, init_latent, noise.to(dtype))
        return samples * nmask + init_latent * mask, mask_u8
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


def float64_runs(runs, nets64, init_u8, mask_u8, out):
    """Whole float64 runs: the final latent and the decoded picture with the overlay."""
    unet, inpaint_unet, vae, text = nets64
    with torch.no_grad():
        for params in runs:
            u = inpaint_unet if params["model"] == "inpaint" else unet
            latent, used_mask = run(params, (u, vae, text), torch.float64, init_u8, mask_u8)
            out[params["name"] + "_latent"] = latent.contiguous()
            image = pref.to_uint8(pref.decode(vae, latent))[0]
            out[params["name"] + "_image"] = torch.from_numpy(overlay(image, init_u8, used_mask).copy())[None]
            print(params["name"], "done")


def write(name, tensors, meta):
    save_file(tensors, str(OUT / f"{name}.safetensors"))
    (OUT / f"{name}.json").write_text(json.dumps(meta, indent=1))
    print("wrote", OUT / f"{name}.safetensors")


def main():
    sections = sys.argv[1:] or ["base", "masks", "resized", "timesteps"]
    torch.set_num_threads(2)
    unet, vae, text, _ = tiny.make(tiny.SD1, 1)
    tiny.reload(tiny.SD1, unet, vae, text, str(MODEL_DIR / "sd1_tiny.safetensors"))
    inpaint_unet = make_inpaint_unet(write="base" in sections)
    init_u8 = np.random.default_rng(6).integers(0, 256, (H, W, 3), dtype=np.uint8)
    mask_u8 = np.zeros((H, W), dtype=np.uint8)
    mask_u8[24:56, 16:48] = 255
    meta = {"prompt": pref.PROMPT, "negative_prompt": pref.NEGATIVE, "width": W, "height": H}
    if "resized" in sections:
        # A 48x40 mask (ellipse and noise) for the 64x64 picture.
        yy, xx = np.mgrid[0:40, 0:48]
        own = np.where(((xx - 22) / 14.0) ** 2 + ((yy - 19) / 11.0) ** 2 < 1, 255, 0).astype(np.uint8)
        own[2:8, 36:46] = np.random.default_rng(11).integers(0, 256, (6, 10), dtype=np.uint8)
        out = {"own_mask": torch.from_numpy(own.copy())}
        for params in RESIZED_RUNS:
            out[params["name"] + "_mask"] = torch.from_numpy(prepare_mask(own, params).copy())
        nets64 = (unet.to(torch.float64).eval(), inpaint_unet.to(torch.float64).eval(),
                  vae.to(torch.float64).eval(), text.to(torch.float64).eval())
        float64_runs(RESIZED_RUNS, nets64, init_u8, own, out)
        write("inpaint_resized_reference", out, {**meta, "mask_width": 48, "mask_height": 40,
                                                 "runs": RESIZED_RUNS})
    if "timesteps" in sections:
        nets64 = (unet.to(torch.float64).eval(), inpaint_unet.to(torch.float64).eval(),
                  vae.to(torch.float64).eval(), text.to(torch.float64).eval())
        out = {}
        float64_runs(TIMESTEP_RUNS, nets64, init_u8, mask_u8, out)
        write("inpaint_timesteps_reference", out, {**meta, "runs": TIMESTEP_RUNS})
    if "base" in sections:
        base(unet, inpaint_unet, vae, text, init_u8, mask_u8)
    if "masks" in sections:
        masks_section(unet, inpaint_unet, vae, text, init_u8, mask_u8)


def base(unet, inpaint_unet, vae, text, init_u8, mask_u8):
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


def masks_section(unet, inpaint_unet, vae, text, init_u8, mask_u8):
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
