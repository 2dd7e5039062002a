#!/usr/bin/env python3
"""Benchmark of `danlu convert` against the usual Python way, on the same file in the same run.

1. Writes an SD1.5-shaped fp32 `.ckpt` with EMA, as original LDM training checkpoints are:
   `{"state_dict": {...}, "global_step": N}`, the UNet, its EMA copy under LDM `LitEma` names
   (`model_ema.diffusion_modelinput_blocks00weight`), the VAE and CLIP-L, random normals.
   Names and shapes are those of `target/reference/model/sd15_shape.safetensors`
   (`model_make_full_shape.py sd15`), only its header is read.
2. Converts it to a pruned fp16 safetensors file twice, each under `/usr/bin/time -v`:
   danlu (the `convert` example of `danlu-convert`, release build) and
   `torch.load` + `.half()` + `safetensors.torch.save_file`.
3. Prints wall time and peak RSS of both, checks the two outputs hold the same tensors, and
   deletes the big files.

Usage: .venv/bin/python scripts/reference/convert_bench.py [--keep]
       (after `cargo build --release -p danlu-convert --example convert`)
"""

import json
import os
import re
import subprocess
import sys
import time

import torch
from safetensors import safe_open

ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", ".."))
WORK = os.path.join(ROOT, "target", "convert-bench")
SHAPES = os.path.join(ROOT, "target", "reference", "model", "sd15_shape.safetensors")
EXAMPLE = os.environ.get("DANLU_CONVERT_EXAMPLE", os.path.join(ROOT, "target", "h8", "release", "examples", "convert"))

PY_WAY = """
import sys, torch
from safetensors.torch import save_file
sd = torch.load(sys.argv[1], map_location="cpu", weights_only=True)["state_dict"]
sd = {k: (v.half() if v.is_floating_point() else v).contiguous()
      for k, v in sd.items() if not k.startswith("model_ema.")}
save_file(sd, sys.argv[2])
"""


def make_ckpt(path):
    with safe_open(SHAPES, "pt") as f:
        shapes = {k: f.get_slice(k).get_shape() for k in f.keys()}
    gen = torch.Generator().manual_seed(0)
    sd = {}
    for k, shape in sorted(shapes.items()):
        if k.endswith("position_ids"):
            sd[k] = torch.arange(shape[-1], dtype=torch.int64).reshape(shape)
            continue
        t = torch.randn(shape, generator=gen, dtype=torch.float32) * 0.02
        sd[k] = t
        if k.startswith("model.diffusion_model."):
            sd["model_ema." + k[len("model."):].replace(".", "")] = t.clone().add_(1e-3)
    sd["model_ema.decay"] = torch.tensor(0.9999)
    sd["model_ema.num_updates"] = torch.tensor(1000, dtype=torch.int32)
    torch.save({"state_dict": sd, "global_step": 1000}, path)
    return len(sd)


def timed(cmd):
    p = subprocess.run(["/usr/bin/time", "-v"] + cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"{cmd[0]} failed:\n{p.stdout}\n{p.stderr}")
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", p.stderr).group(1)
    parts = [float(x) for x in wall.split(":")]
    secs = sum(v * 60 ** i for i, v in enumerate(reversed(parts)))
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr).group(1))
    return secs, rss_kb * 1024, p.stdout


def main():
    os.makedirs(WORK, exist_ok=True)
    ckpt = os.path.join(WORK, "sd15_fp32_ema.ckpt")
    out_d = os.path.join(WORK, "danlu.safetensors")
    out_p = os.path.join(WORK, "python.safetensors")
    for p in (out_d, out_p):
        if os.path.exists(p):
            os.remove(p)
    try:
        if not os.path.exists(ckpt):
            t = time.time()
            n = make_ckpt(ckpt)
            print(f"wrote {ckpt}: {n} tensors, {os.path.getsize(ckpt) / 1e9:.2f} GB in {time.time() - t:.0f}s")
        # Same page-cache state for both: each reads the file once before its own run.
        subprocess.run(["cat", ckpt], stdout=subprocess.DEVNULL, check=True)
        d_wall, d_rss, d_out = timed([EXAMPLE, ckpt, out_d, "f16", "prune"])
        report = json.loads(d_out)
        subprocess.run(["cat", ckpt], stdout=subprocess.DEVNULL, check=True)
        p_wall, p_rss, _ = timed([sys.executable, "-c", PY_WAY, ckpt, out_p])
        size = os.path.getsize(ckpt)
        print(f"source   {size / 1e9:.2f} GB fp32 with EMA ({report['source_tensors']} tensors)")
        print(f"danlu    {d_wall:6.1f} s  peak RSS {d_rss / 2**20:8.0f} MiB  -> {os.path.getsize(out_d) / 1e9:.2f} GB "
              f"({report['tensors']} tensors; max tensor buffer {report['max_buffer_bytes']} B)")
        print(f"python   {p_wall:6.1f} s  peak RSS {p_rss / 2**20:8.0f} MiB  -> {os.path.getsize(out_p) / 1e9:.2f} GB")
        print(f"ratio    {p_wall / d_wall:.1f}x faster, {p_rss / d_rss:.0f}x less memory")
        # Same tensors, bit for bit.
        with safe_open(out_d, "pt") as a, safe_open(out_p, "pt") as b:
            ka, kb = set(a.keys()), set(b.keys())
            assert ka == kb, sorted(ka ^ kb)[:5]
            for k in ka:
                x, y = a.get_tensor(k), b.get_tensor(k)
                assert x.dtype == y.dtype and torch.equal(x, y), k
        print(f"outputs  identical tensors ({len(ka)})")
    finally:
        if "--keep" not in sys.argv:
            for p in (ckpt, out_d, out_p):
                if os.path.exists(p):
                    os.remove(p)


if __name__ == "__main__":
    main()
