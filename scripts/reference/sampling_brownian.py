#!/usr/bin/env python3
"""Reference values of the Brownian-tree step noise of A1111's SDE samplers.

A1111 (`sd_samplers_common.Sampler.create_noise_sampler`) gives `DPM++ SDE`, `DPM++ 2M SDE` and
`DPM++ 2M SDE Heun` a k-diffusion `BrownianTreeNoiseSampler(x, sigma_min, sigma_max,
seed=<the batch's seeds>)`, one torchsde `BrownianTree` per image. This script records:

  * `seed_sequences`: NumPy `SeedSequence(entropy, spawn_key=..., pool_size=...)`
    `.generate_state(4)` for a few inputs (the seeds torchsde feeds to `torch.randn`);
  * `trees`: the trees' signed increments (`BatchedBrownianTree(sigma, sigma_next)`) and the
    sampler's outputs (divided by `sqrt(|sigma_next - sigma|)`) for a list of `(sigma, sigma_next)` float32 queries in the
    order DPM++ SDE and DPM++ 2M SDE ask them on Karras sigmas (batched seeds, float32 latent
    on the CPU), flattened;
  * `sde_queries`: the float32 times `sample_dpmpp_sde` computes for its queries
    (`sigma_fn(t)`, `sigma_fn(t + h / 2)`, `sigma_fn(t_next)`), to compare with danlu's.

Writes crates/danlu-diffusion/tests/reference/sampling/brownian_reference.json.
Made with torch 2.15, torchsde 0.2.6, k-diffusion 0.1.1, numpy 1.26.
Run: .venv/bin/python scripts/reference/sampling_brownian.py
"""

import json
import pathlib

import numpy as np
import torch
import k_diffusion.sampling as ks

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "crates/danlu-diffusion/tests/reference/sampling/brownian_reference.json"
SIGMA_MIN, SIGMA_MAX = 0.0291675, 14.614642


def dpmpp_sde_queries(sigmas):
    """The (sigma, sigma_next) pairs `sample_dpmpp_sde` passes to its noise sampler."""
    t_fn = lambda s: s.log().neg()
    sigma_fn = lambda t: t.neg().exp()
    out = []
    for i in range(len(sigmas) - 1):
        if sigmas[i + 1] == 0:
            continue
        t, t_next = t_fn(sigmas[i]), t_fn(sigmas[i + 1])
        h = t_next - t
        s = t + h * 0.5
        out.append((sigma_fn(t), sigma_fn(s)))
        out.append((sigma_fn(t), sigma_fn(t_next)))
    return out


def main():
    seq = []
    for entropy, key, pool in [(0, [], 4), (1234, [], 24), (2**32 + 5, [], 24), (1234, [0, 0], 24),
                               (1234, [5, 3], 24), (4294967295, [123456, 17], 24), (7, [1, 1, 2], 4)]:
        state = np.random.SeedSequence(entropy=entropy, spawn_key=key, pool_size=pool).generate_state(4)
        seq.append({"entropy": entropy, "spawn_key": key, "pool_size": pool, "state": [int(v) for v in state]})

    trees = []
    karras = ks.get_sigmas_karras(6, SIGMA_MIN, SIGMA_MAX, rho=7.0)
    sde_q = dpmpp_sde_queries(karras)
    two_m = [(karras[i], karras[i + 1]) for i in range(len(karras) - 1) if karras[i + 1] > 0]
    for name, seeds, shape, queries in [
        ("sde_batch2", [1234, 1235], (4, 4, 4), sde_q),
        ("2m_sde_small", [42], (2, 2, 2), two_m),
        ("2m_sde_big_seed", [4294967296 + 99], (4, 4, 4), two_m),
    ]:
        smin = karras[karras > 0].min()
        smax = karras.max()
        x = torch.zeros((len(seeds),) + shape, dtype=torch.float32)
        ns = ks.BrownianTreeNoiseSampler(x, smin, smax, seed=seeds)
        outs, incs = [], []
        for s, sn in queries:
            incs.append(ns.tree(s, sn).flatten().tolist())
            outs.append(ns(s, sn).flatten().tolist())
        trees.append({
            "name": name, "seeds": seeds, "shape": list(shape),
            "sigma_min": float(smin), "sigma_max": float(smax),
            "queries": [[float(s), float(sn)] for s, sn in queries],
            "increments": incs,
            "noise": outs,
        })
    data = {
        "seed_sequences": seq,
        "trees": trees,
        "karras": [float(v) for v in karras],
        "sde_queries": [[float(a), float(b)] for a, b in sde_q],
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with open(OUT, "w") as f:
        json.dump(data, f)
    print("wrote", OUT, OUT.stat().st_size, "bytes")


if __name__ == "__main__":
    main()
