"""The real `webuiapi` client (PyPI) against a running danlu server.

Run by `tests/webuiapi.rs` with the server's base URL and the credentials it was started with;
the server's root holds two copies of the tiny checkpoint, `second` and `tiny`, whose files this
script hashes itself to check the server's hashes. Exits non-zero on the first failed check.
"""

import hashlib
import sys
import threading
import time

import webuiapi
from PIL import Image

url, user, password = sys.argv[1], sys.argv[2], sys.argv[3]
api = webuiapi.WebUIApi(baseurl=f"{url}/sdapi/v1", username=user, password=password)

# The server hashes its checkpoints in the background after startup: wait for A1111's hashes
# (`sha256` of the whole file, `hash` the old one: sha256 of the 64 KiB at 1 MiB, 8 digits),
# checked against hashlib here.
def file_hashes(path):
    with open(path, "rb") as f:
        data = f.read()
    return hashlib.sha256(data).hexdigest(), hashlib.sha256(data[0x100000:0x110000]).hexdigest()[:8]


for _ in range(1200):
    models = api.get_sd_models()
    if all(m["sha256"] for m in models):
        break
    time.sleep(0.05)
else:
    raise AssertionError(f"never hashed: {models}")
for m in models:
    assert (m["sha256"], m["hash"]) == file_hashes(m["filename"]), m
short = models[0]["sha256"][:10]

# List models, switch checkpoint and VAE through options (titles are `NAME [SHORTHASH]`).
names = api.util_get_model_names()
assert names == [f"second.safetensors [{short}]", f"tiny.safetensors [{short}]"], names
assert [s["name"] for s in api.get_samplers()][0] == "DPM++ 2M"
api.util_set_model("second.safetensors")
options = api.get_options()
assert options["sd_model_checkpoint"] == f"second.safetensors [{short}]", options
assert options["sd_checkpoint_hash"] == models[0]["sha256"], options
api.set_options({"sd_vae": "None"})
assert api.get_options()["sd_vae"] == "None"
api.set_options({"sd_vae": "Automatic", "sd_model_checkpoint": "tiny.safetensors"})
assert api.util_get_current_model() == f"tiny.safetensors [{short}]"

# txt2img: PIL images, A1111's info.
r = api.txt2img(prompt="a cat", steps=2, width=64, height=64, seed=5, batch_size=2)
assert len(r.images) == 2 and r.image.size == (64, 64), r.images
assert r.info["all_seeds"] == [5, 6], r.info["all_seeds"]
assert "Seed: 6" in r.info["infotexts"][1], r.info["infotexts"]
assert r.parameters["steps"] == 2

# png-info of the returned image (webuiapi re-encodes it with its text chunks).
p = api.png_info(r.images[1])
assert "Seed: 6" in p.info, p.info
assert p.parameters["Seed"] == 6, p.parameters

# img2img.
r2 = api.img2img(images=[r.image], prompt="a dog", steps=2, width=64, height=64,
                 denoising_strength=0.5, seed=9)
assert len(r2.images) == 1 and r2.image.size == (64, 64)
assert r2.info["all_seeds"] == [9]

# img2img with a mask: "Inpaint area: Whole picture", then webuiapi's default "Only masked"
# (the part around the mask inpainted at 32x32, pasted back into the 64x64 picture).
mask = Image.new("L", (64, 64), 0)
mask.paste(255, (0, 0, 32, 64))
r3 = api.img2img(images=[r.image], mask_image=mask, inpaint_full_res=False, mask_blur=2,
                 inpainting_fill=1, prompt="a dog", steps=2, width=64, height=64,
                 denoising_strength=0.5, seed=9)
assert len(r3.images) == 1 and r3.image.size == (64, 64)
assert "Mask blur: 2" in r3.info["infotexts"][0], r3.info["infotexts"]
r4 = api.img2img(images=[r.image], mask_image=mask, prompt="a dog", steps=2, width=32,
                 height=32, denoising_strength=0.5, seed=9)
assert r4.image.size == (64, 64), r4.image.size
assert "Inpaint area: Only masked" in r4.info["infotexts"][0], r4.info["infotexts"]

# progress and interrupt.
out = {}
job = threading.Thread(target=lambda: out.setdefault("r", api.txt2img(
    prompt="long", steps=150, width=64, height=64, n_iter=40, seed=1)))
job.start()
for _ in range(600):
    prog = api.get_progress()
    if prog["state"]["sampling_step"] > 0 and prog["current_image"]:
        break
    time.sleep(0.05)
else:
    raise AssertionError(f"no progress: {prog}")
assert 0 < prog["progress"] <= 1, prog
api.interrupt()
job.join(120)
assert not job.is_alive()
assert len(out["r"].images) < 40, len(out["r"].images)
assert out["r"].info["interrupted"] is True
print("webuiapi: all checks passed")
