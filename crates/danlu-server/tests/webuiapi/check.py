"""The real `webuiapi` client (PyPI) against a running danlu server.

Run by `tests/webuiapi.rs` with the server's base URL, the credentials it was started with, and
the names of its two checkpoints. Exits non-zero on the first failed check.
"""

import sys
import threading
import time

import webuiapi

url, user, password = sys.argv[1], sys.argv[2], sys.argv[3]
api = webuiapi.WebUIApi(baseurl=f"{url}/sdapi/v1", username=user, password=password)

# List models, switch checkpoint and VAE through options.
names = api.util_get_model_names()
assert names == ["second.safetensors", "tiny.safetensors"], names
assert [s["name"] for s in api.get_samplers()][0] == "DPM++ 2M"
api.util_set_model("second.safetensors")
assert api.get_options()["sd_model_checkpoint"] == "second.safetensors"
api.set_options({"sd_vae": "None"})
assert api.get_options()["sd_vae"] == "None"
api.set_options({"sd_vae": "Automatic", "sd_model_checkpoint": "tiny.safetensors"})
assert api.util_get_current_model() == "tiny.safetensors"

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
