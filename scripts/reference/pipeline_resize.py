#!/usr/bin/env python3
"""Reference outputs of A1111's init-image resize (`modules/images.py` `resize_image`, no
img2img upscaler: every step is Pillow `Image.resize(..., resample=LANCZOS, box=...)`).

Writes crates/danlu-diffusion/tests/reference/pipeline/resize_reference.safetensors: the source
images (`src_<name>`, uint8 [H, W, 3]) and each case's result (`<case>`), and
resize_reference.json listing the cases (source, mode, width, height).

Pillow: A1111 pins Pillow 9.5.0 (`requirements_versions.txt`), whose `ImagingResampleInner` always
runs the horizontal pass first (also upstream Pillow to this day). Some Pillow 13 wheels run the
vertical pass first for some sizes, which moves 8-bit values by up to 10 where the first pass
clips, so the script insists on 9.5:
  .venv/bin/pip install --target /tmp/pil95 Pillow==9.5.0
  PYTHONPATH=/tmp/pil95 .venv/bin/python scripts/reference/pipeline_resize.py
"""

import json
import pathlib

import numpy as np
import PIL
import torch
from PIL import Image

LANCZOS = Image.LANCZOS
from safetensors.torch import save_file

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "crates/danlu-diffusion/tests/reference/pipeline"


def resize_image(resize_mode, im, width, height):
    """A1111 1.10 `images.resize_image` with `upscaler_name` None."""

    def resize(im, w, h):
        return im.resize((w, h), resample=LANCZOS)

    if resize_mode == 0:
        res = resize(im, width, height)
    elif resize_mode == 1:
        ratio = width / height
        src_ratio = im.width / im.height
        src_w = width if ratio > src_ratio else im.width * height // im.height
        src_h = height if ratio <= src_ratio else im.height * width // im.width
        resized = resize(im, src_w, src_h)
        res = Image.new("RGB", (width, height))
        res.paste(resized, box=(width // 2 - src_w // 2, height // 2 - src_h // 2))
    else:
        ratio = width / height
        src_ratio = im.width / im.height
        src_w = width if ratio < src_ratio else im.width * height // im.height
        src_h = height if ratio >= src_ratio else im.height * width // im.width
        resized = resize(im, src_w, src_h)
        res = Image.new("RGB", (width, height))
        res.paste(resized, box=(width // 2 - src_w // 2, height // 2 - src_h // 2))
        if ratio < src_ratio:
            fill_height = height // 2 - src_h // 2
            if fill_height > 0:
                res.paste(resized.resize((width, fill_height), box=(0, 0, width, 0)), box=(0, 0))
                res.paste(resized.resize((width, fill_height), box=(0, resized.height, width, resized.height)),
                          box=(0, fill_height + src_h))
        elif ratio > src_ratio:
            fill_width = width // 2 - src_w // 2
            if fill_width > 0:
                res.paste(resized.resize((fill_width, height), box=(0, 0, 0, height)), box=(0, 0))
                res.paste(resized.resize((fill_width, height), box=(resized.width, 0, resized.width, height)),
                          box=(fill_width + src_w, 0))
    return res


def main():
    if not PIL.__version__.startswith("9.5."):
        raise SystemExit(f"Pillow {PIL.__version__}: run with A1111's Pillow 9.5 (see the docstring)")
    rng = np.random.default_rng(11)
    # Noise is the hardest case for a resampler; the gradient checks smooth areas and edges.
    noise = rng.integers(0, 256, (23, 37, 3), dtype=np.uint8)
    yy, xx = np.mgrid[0:41, 0:19]
    grad = np.stack([xx * 13 % 256, yy * 6, (xx * yy) % 256], axis=-1).astype(np.uint8)
    sources = {"noise": noise, "grad": grad}
    cases = [
        ("noise", 0, 64, 48), ("noise", 0, 16, 24), ("noise", 1, 64, 64), ("noise", 1, 24, 40),
        ("noise", 2, 32, 64), ("noise", 2, 64, 24), ("grad", 0, 48, 48), ("grad", 1, 64, 32),
        ("grad", 2, 64, 40), ("grad", 2, 16, 64), ("noise", 0, 37, 23),
    ]
    tensors = {f"src_{k}": torch.from_numpy(v.copy()) for k, v in sources.items()}
    meta = []
    for src, mode, w, h in cases:
        name = f"{src}_{mode}_{w}x{h}"
        out = np.asarray(resize_image(mode, Image.fromarray(sources[src]), w, h))
        tensors[name] = torch.from_numpy(out.copy())
        meta.append({"name": name, "source": src, "mode": mode, "width": w, "height": h})
    save_file(tensors, str(OUT / "resize_reference.safetensors"))
    (OUT / "resize_reference.json").write_text(json.dumps({"pillow": PIL.__version__, "cases": meta}, indent=1))
    print("wrote", len(cases), "cases with Pillow", PIL.__version__)


if __name__ == "__main__":
    main()
