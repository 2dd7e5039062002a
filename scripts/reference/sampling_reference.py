"""Reference schedules and sampler runs for the `sampling` parity tests of danlu-diffusion.

Writes crates/danlu-diffusion/tests/reference/sampling/sampling_reference.json with
  * alphas_cumprod of SD 1.x/2.x as LDM builds it (float64 linspace ** 2, numpy cumprod, float32),
  * k-diffusion CompVisDenoiser sigmas, get_sigmas(n), sigma_to_t of a few sigmas,
  * get_sigmas_karras / _exponential / _polyexponential and A1111's sgm_uniform,
  * linear_multistep_coeff (scipy quad) for an LMS schedule,
  * complete runs of k-diffusion samplers and of A1111's DDIM/PLMS (re-written below from
    modules/sd_samplers_timesteps_impl.py) on a small analytic model with CFG, with the noise
    drawn the way A1111's ImageRNG does (torch CPU generator per image, first draw = latent).

The analytic "UNet" (also in crates/danlu-diffusion/tests/sampling_parity.rs):
    out[n, c] = sum_k A[c, k] * x_in[n, k] + bias[n][c] * cos(0.01 * t)
with the first half of the batch using COND_BIAS and the second half UNCOND_BIAS.

UniPC comes from sampling_unipc.py (A1111's uni_pc.py, default path, re-written).

Made with torch 2.15.0, k-diffusion 0.1.1.post1, scipy 1.17.1, numpy 1.26.4 (CPU, float32).
Run: .venv/bin/python scripts/reference/sampling_reference.py
"""

import inspect
import sys
import json
import math
import pathlib

import numpy as np
import torch
import k_diffusion.sampling as ks
from k_diffusion.external import CompVisDenoiser, CompVisVDenoiser

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
OUT = pathlib.Path(__file__).resolve().parents[2] / "crates/danlu-diffusion/tests/reference/sampling"

A = torch.tensor([
    [0.90, 0.05, -0.03, 0.02],
    [0.04, 0.85, 0.06, -0.05],
    [-0.02, 0.03, 0.95, 0.04],
    [0.05, -0.04, 0.02, 0.88],
], dtype=torch.float32)
COND_BIAS = torch.tensor([0.10, -0.20, 0.05, 0.15], dtype=torch.float32)
UNCOND_BIAS = torch.tensor([-0.05, 0.10, 0.00, -0.10], dtype=torch.float32)
CFG_SCALE = 7.5
STEPS = 8


def ldm_alphas_cumprod():
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    alphas = 1.0 - betas.numpy()
    return torch.tensor(np.cumprod(alphas, axis=0), dtype=torch.float32)


class FakeLdm:
    """What k-diffusion's CompVisDenoiser needs from an LDM model."""

    def __init__(self, v=False):
        self.alphas_cumprod = ldm_alphas_cumprod()
        self.parameterization = "v" if v else "eps"
        self.sqrt_alphas_cumprod = self.alphas_cumprod.sqrt()
        self.sqrt_one_minus_alphas_cumprod = (1 - self.alphas_cumprod).sqrt()

    def apply_model(self, x, t, cond=None):
        n = x.shape[0]
        bias = torch.cat([COND_BIAS.expand(n // 2, 4), UNCOND_BIAS.expand(n // 2, 4)])
        lin = torch.einsum("ck,nkhw->nchw", A, x)
        return lin + bias[:, :, None, None] * torch.cos(0.01 * t.float())[:, None, None, None]


class Cfg:
    """A1111 CFGDenoiser for one prompt: prompt and negative prompt in one batch."""

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, x, sigma, **kwargs):
        out = self.inner(torch.cat([x, x]), torch.cat([sigma, sigma]), cond=None)
        b = x.shape[0]
        cond, uncond = out[:b], out[b:]
        return uncond + (cond - uncond) * CFG_SCALE


class Rng:
    """A1111 ImageRNG on CPU: one torch generator per image."""

    def __init__(self, seeds, shape=(4, 8, 8)):
        self.gens = [torch.Generator().manual_seed(s) for s in seeds]
        self.shape = shape

    def next(self):
        return torch.stack([torch.randn(self.shape, generator=g) for g in self.gens])


def flat(t):
    return [float(v) for v in t.flatten().tolist()]


# A1111 modules/sd_samplers_timesteps_impl.py ddim / plms, re-written.
def ddim(model, x, timesteps, alphas_cumprod, rng, eta=0.0):
    alphas = alphas_cumprod[timesteps]
    alphas_prev = alphas_cumprod[torch.nn.functional.pad(timesteps[:-1], pad=(1, 0))].to(torch.float64)
    sqrt_one_minus_alphas = torch.sqrt(1 - alphas)
    sigmas = eta * np.sqrt((1 - alphas_prev.numpy()) / (1 - alphas) * (1 - alphas / alphas_prev.numpy()))
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(timesteps) - 1):
        index = len(timesteps) - 1 - i
        e_t = model(x, timesteps[index].item() * s_in)
        a_t = alphas[index].item() * s_in
        a_prev = alphas_prev[index].item() * s_in
        sigma_t = sigmas[index].item() * s_in
        sqrt_one_minus_at = sqrt_one_minus_alphas[index].item() * s_in
        a_t, a_prev, sigma_t, sqrt_one_minus_at = [v[:, None, None, None] for v in (a_t, a_prev, sigma_t, sqrt_one_minus_at)]
        pred_x0 = (x - sqrt_one_minus_at * e_t) / a_t.sqrt()
        dir_xt = (1. - a_prev - sigma_t ** 2).sqrt() * e_t
        noise = sigma_t * rng.next() if eta else 0.0
        x = a_prev.sqrt() * pred_x0 + dir_xt + noise
    return x


def plms(model, x, timesteps, alphas_cumprod):
    alphas = alphas_cumprod[timesteps]
    alphas_prev = alphas_cumprod[torch.nn.functional.pad(timesteps[:-1], pad=(1, 0))].to(torch.float64)
    sqrt_one_minus_alphas = torch.sqrt(1 - alphas)
    s_in = x.new_ones([x.shape[0]])
    old_eps = []

    def step(x, e_t, index):
        a_t = (alphas[index].item() * s_in)[:, None, None, None]
        a_prev = (alphas_prev[index].item() * s_in)[:, None, None, None]
        sqrt_one_minus_at = (sqrt_one_minus_alphas[index].item() * s_in)[:, None, None, None]
        pred_x0 = (x - sqrt_one_minus_at * e_t) / a_t.sqrt()
        dir_xt = (1. - a_prev).sqrt() * e_t
        return a_prev.sqrt() * pred_x0 + dir_xt, pred_x0

    for i in range(len(timesteps) - 1):
        index = len(timesteps) - 1 - i
        ts = timesteps[index].item() * s_in
        t_next = timesteps[max(index - 1, 0)].item() * s_in
        e_t = model(x, ts)
        if len(old_eps) == 0:
            x_prev, _ = step(x, e_t, index)
            e_t_next = model(x_prev, t_next)
            e_t_prime = (e_t + e_t_next) / 2
        elif len(old_eps) == 1:
            e_t_prime = (3 * e_t - old_eps[-1]) / 2
        elif len(old_eps) == 2:
            e_t_prime = (23 * e_t - 16 * old_eps[-1] + 5 * old_eps[-2]) / 12
        else:
            e_t_prime = (55 * e_t - 59 * old_eps[-1] + 37 * old_eps[-2] - 9 * old_eps[-3]) / 24
        x_prev, _ = step(x, e_t_prime, index)
        old_eps.append(e_t)
        if len(old_eps) >= 4:
            old_eps.pop(0)
        x = x_prev
    return x


class EpsCfg:
    """A1111 CFGDenoiserTimesteps around CompVisTimestepsDenoiser / ...VDenoiser."""

    def __init__(self, ldm):
        self.ldm = ldm

    def __call__(self, x, t):
        x_in, t_in = torch.cat([x, x]), torch.cat([t, t])
        out = self.ldm.apply_model(x_in, t_in)
        if self.ldm.parameterization == "v":
            ti = t_in.to(torch.int)
            out = self.ldm.sqrt_alphas_cumprod[ti, None, None, None] * out + \
                self.ldm.sqrt_one_minus_alphas_cumprod[ti, None, None, None] * x_in
        b = x.shape[0]
        return out[b:] + (out[:b] - out[b:]) * CFG_SCALE


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    ldm = FakeLdm()
    wrap = CompVisDenoiser(ldm)
    ref = {"alphas_cumprod": flat(ldm.alphas_cumprod)}
    ref["sigma_min"] = wrap.sigmas[0].item()
    ref["sigma_max"] = wrap.sigmas[-1].item()
    probe = torch.tensor([14.6146, 10.0, 3.3, 1.0, 0.5, 0.1, 0.0292, 0.03], dtype=torch.float32)
    ref["sigma_to_t"] = {"sigmas": flat(probe), "t": flat(wrap.sigma_to_t(probe))}
    ref["get_sigmas"] = {str(n): flat(wrap.get_sigmas(n)) for n in (1, 2, 8, 20, 25)}
    smin, smax = wrap.sigmas[0].item(), wrap.sigmas[-1].item()
    ref["karras"] = {str(n): flat(ks.get_sigmas_karras(n, smin, smax, rho=7.0)) for n in (8, 9, 20)}
    ref["exponential"] = {str(n): flat(ks.get_sigmas_exponential(n, smin, smax)) for n in (8, 20)}
    ref["polyexponential"] = {str(n): flat(ks.get_sigmas_polyexponential(n, smin, smax, rho=1.0)) for n in (8,)}
    start, end = wrap.sigma_to_t(torch.tensor(smax)), wrap.sigma_to_t(torch.tensor(smin))
    sgm = [wrap.t_to_sigma(ts).item() for ts in torch.linspace(start, end, 8 + 1)[:-1]] + [0.0]
    ref["sgm_uniform"] = {"8": [float(np.float32(v)) for v in sgm]}

    lms_sigmas = wrap.get_sigmas(STEPS).numpy()
    ref["lms_coeffs"] = {
        "sigmas": [float(v) for v in lms_sigmas],
        "coeffs": [[ks.linear_multistep_coeff(min(i + 1, 4), lms_sigmas, i, j) for j in range(min(i + 1, 4))]
                   for i in range(len(lms_sigmas) - 1)],
    }

    runs = {}

    def kd(label, fn, sigmas, seeds=(1234,), v=False, **kw):
        model = Cfg(CompVisVDenoiser(FakeLdm(v=True)) if v else wrap)
        rng = Rng(list(seeds))
        x = rng.next() * sigmas[0]
        if "noise_sampler" in inspect.signature(fn).parameters:
            kw["noise_sampler"] = lambda s, sn: rng.next()
        out = fn(model, x, sigmas, disable=True, **kw)
        runs[label] = {"seeds": list(seeds), "sigmas": flat(sigmas), "x": flat(out)}

    g = wrap.get_sigmas
    kar = lambda n: ks.get_sigmas_karras(n, smin, smax, rho=7.0)
    exp = lambda n: ks.get_sigmas_exponential(n, smin, smax)
    discard = lambda s: torch.cat([s[:-2], s[-1:]])
    kd("Euler", ks.sample_euler, g(STEPS))
    kd("Euler a", ks.sample_euler_ancestral, g(STEPS))
    kd("Euler a batch", ks.sample_euler_ancestral, g(STEPS), seeds=(100, 101))
    kd("Heun", ks.sample_heun, g(STEPS))
    kd("LMS", ks.sample_lms, g(STEPS))
    kd("DPM2", ks.sample_dpm_2, discard(kar(STEPS + 1)))
    kd("DPM2 a", ks.sample_dpm_2_ancestral, discard(kar(STEPS + 1)))
    kd("DPM++ 2S a", ks.sample_dpmpp_2s_ancestral, kar(STEPS))
    kd("DPM++ 2M", ks.sample_dpmpp_2m, kar(STEPS))
    kd("DPM++ SDE", ks.sample_dpmpp_sde, kar(STEPS))
    kd("DPM++ 2M SDE", ks.sample_dpmpp_2m_sde, exp(STEPS))
    kd("DPM++ 2M SDE Heun", ks.sample_dpmpp_2m_sde, exp(STEPS), solver_type="heun")
    kd("Euler Karras", ks.sample_euler, kar(STEPS))
    kd("DPM++ 2M Uniform", ks.sample_dpmpp_2m, g(STEPS))
    kd("Euler v", ks.sample_euler, g(STEPS), v=True)

    ac = ldm.alphas_cumprod
    timesteps = torch.clip(torch.asarray(list(range(0, 1000, 1000 // STEPS))) + 1, 0, 999)
    for label, fn, v in (("DDIM", ddim, False), ("PLMS", plms, False), ("DDIM v", ddim, True)):
        rng = Rng([1234])
        x = rng.next()
        m = EpsCfg(FakeLdm(v=v))
        out = fn(m, x, timesteps, ac) if fn is plms else fn(m, x, timesteps, ac, rng, eta=0.0)
        runs[label] = {"seeds": [1234], "timesteps": [int(t) for t in timesteps], "x": flat(out)}
    rng = Rng([1234])
    x = rng.next()
    runs["DDIM eta"] = {"seeds": [1234], "timesteps": [int(t) for t in timesteps],
                        "x": flat(ddim(EpsCfg(ldm), x, timesteps, ac, rng, eta=0.5))}

    # img2img as A1111's sample_img2img (img2img_fix_steps off): t_enc = int(min(strength,
    # 0.999) * steps), k-diffusion runs on sigmas[steps - t_enc - 1:] from init + noise * sigma,
    # timestep samplers on timesteps[:t_enc] from init * sqrt(a) + noise * sqrt(1 - a).
    init = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(999))
    strength = 0.6
    t_enc = int(min(strength, 0.999) * STEPS)
    for label, fn, sig in (("img2img Euler a", ks.sample_euler_ancestral, g(STEPS)),
                           ("img2img DPM++ 2M", ks.sample_dpmpp_2m, kar(STEPS))):
        rng = Rng([1234])
        noise = rng.next()
        sched = sig[STEPS - t_enc - 1:]
        xi = init + noise * sched[0]
        kw = {"noise_sampler": (lambda s, sn: rng.next())} if "noise_sampler" in inspect.signature(fn).parameters else {}
        out = fn(Cfg(wrap), xi, sched, disable=True, **kw)
        runs[label] = {"seeds": [1234], "init_seed": 999, "strength": strength, "x": flat(out)}
    rng = Rng([1234])
    noise = rng.next()
    a = ac[timesteps[t_enc]]
    xi = init * torch.sqrt(a) + noise * torch.sqrt(1 - a)
    out = ddim(EpsCfg(ldm), xi, timesteps[:t_enc], ac, rng, eta=0.0)
    runs["img2img DDIM"] = {"seeds": [1234], "init_seed": 999, "strength": strength, "x": flat(out)}
    # A1111 sd_samplers_timesteps_impl.unipc: steps = len(get_timesteps(steps)).
    from sampling_unipc import NoiseScheduleVP, UniPC
    for label, n in (("UniPC", STEPS), ("UniPC 7", 7)):
        rng = Rng([1234])
        x = rng.next()
        n_ts = len(range(0, 1000, 1000 // n))
        out = UniPC(EpsCfg(ldm), NoiseScheduleVP(ac)).sample(x, steps=n_ts)
        runs[label] = {"seeds": [1234], "steps": n, "x": flat(out)}
    ref["runs"] = runs
    ref["cfg_scale"] = CFG_SCALE
    ref["steps"] = STEPS
    (OUT / "sampling_reference.json").write_text(json.dumps(ref))


if __name__ == "__main__":
    main()
