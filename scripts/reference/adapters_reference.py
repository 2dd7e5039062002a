#!/usr/bin/env python3
"""Random-weight LoRA/LyCORIS adapters for the tiny SD1/SD2 checkpoints and their merged weights.

For each tiny model (`crates/danlu-diffusion/tests/reference/model/sd{1,2}_tiny.safetensors`) this
writes adapters of every subformat with real key names:

    kohya        kohya LoRA, diffusers-style names (`lora_unet_down_blocks_0_...`, `lora_te_...`),
                 alpha != rank, a 3x3 conv down with a 1x1 up on a resnet conv, linear layers,
                 the text encoder (for SD2: q/k/v, which sit in OpenCLIP's fused in_proj)
    kohya_ldm    kohya LoRA with ldm-style UNet names (`lora_unet_input_blocks_1_1_...`), fp16
    locon_cp     LyCORIS LoCon with a CP core (`lora_mid.weight`) on a 3x3 conv
    loha         LyCORIS LoHa, linear and conv (w_b flattened), one with Tucker cores
    lokr         LyCORIS LoKr: whole w1 with factored w2 on a linear, whole 4-D w2 on a conv
    ia3          LyCORIS IA3 on outputs and (`on_input`) on inputs
    dora         kohya-style LoRA with `dora_scale` (weight-decomposed)
    peft         diffusers/PEFT LoRA (`unet.<path>.lora_A.weight`, `text_encoder.<path>.lora_B...`)

and the weights after merging, computed in float64 from the stored weights with the formulas
of A1111 `extensions-builtin/Lora/network_{lora,hada,lokr,ia3}.py`, `network.py`
(`finalize_updown`, `apply_weight_decompose`) and `lyco_helpers.py` (the LyCORIS formulas), and for
the PEFT adapter with PEFT's merge `W + (lora_alpha / r) * B @ A` (no alpha stored: scale 1, as
diffusers loads it). Names come from `sd*_tiny_diffusers_names.json` (diffusers' own converter
mapping), not from the Rust remap.

Outputs in crates/danlu-diffusion/tests/reference/adapters/:
    <model>_<case>.safetensors        the adapter
    <model>_<case>_merged.safetensors diffusers name ("unet/..." or "text_encoder/...") ->
                                      merged weight (computed in float64, stored as float32)
    adapters_reference.json           per case: model, te and unet multipliers

Hypernetworks (A1111 `modules/hypernetworks/hypernetwork.py`, reimplemented below): two random
hypernetworks for the tiny SD1 widths (16, 32, 64) saved as A1111 saves them (`hn_*.pt`), their
modules' outputs on random inputs, and the tiny SD1 UNet's output with both applied (a diffusers
attention processor doing what A1111's hijacked `CrossAttention.forward` does), all in float64,
in hypernetworks_reference.safetensors / .json.

Usage: .venv/bin/python scripts/reference/adapters_reference.py
"""

import json
import os

import torch
from safetensors.torch import load_file, save_file

ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", ".."))
MODEL_DIR = os.path.join(ROOT, "crates/danlu-diffusion/tests/reference/model")
OUT = os.path.join(ROOT, "crates/danlu-diffusion/tests/reference/adapters")

TE_MULT = 0.7
UNET_MULT = 1.3


def stored_weights(model):
    """diffusers name -> float64 weight, taken from the checkpoint as diffusers' converter maps it."""
    ckpt = load_file(os.path.join(MODEL_DIR, f"{model}.safetensors"))
    names = json.load(open(os.path.join(MODEL_DIR, f"{model}_diffusers_names.json")))
    out = {}
    for part in ("unet", "text_encoder"):
        for name, (stored, third, _shape) in names[part].items():
            w = ckpt[stored].to(torch.float64)
            if third >= 0:
                n = w.shape[0] // 3
                w = w[third * n:(third + 1) * n]
            out[f"{part}/{name}"] = (w, stored)
    return out


def kohya_name(diffusers_name):
    part, name = diffusers_name.split("/", 1)
    module = name[: -len(".weight")]
    prefix = "lora_unet_" if part == "unet" else "lora_te_"
    return prefix + module.replace(".", "_")


def ldm_name(stored):
    module = stored[len("model.diffusion_model."): -len(".weight")]
    return "lora_unet_" + module.replace(".", "_")


def rebuild_tucker(t, wa, wb):
    # lyco_helpers.rebuild_tucker / make_weight_cp
    return torch.einsum("i j k l, j r, i p -> p r k l", t, wb, wa)


def lora_updown(up, down, mid, shape):
    # network_lora.ModuleTypeLora.calc_updown
    if mid is not None:
        u = up.reshape(up.size(0), -1)
        d = down.reshape(down.size(0), -1)
        return torch.einsum("n m k l, i n, m j -> i j k l", mid, u, d).reshape(shape)
    return (up.reshape(up.size(0), -1) @ down.reshape(down.size(0), -1)).reshape(shape)


def decompose(updown, orig, dora_scale):
    # network.NetworkModule.apply_weight_decompose
    merged = updown + orig
    dims = len(orig.shape) - 1
    norm = (
        merged.transpose(0, 1)
        .reshape(merged.shape[1], -1)
        .norm(dim=1, keepdim=True)
        .reshape(merged.shape[1], *[1] * dims)
        .transpose(0, 1)
    )
    return merged * (dora_scale.reshape(norm.shape) / norm) - orig


class Case:
    def __init__(self, model, weights, gen):
        self.model = model
        self.weights = weights
        self.gen = gen
        self.tensors = {}
        self.merged = {}

    def randn(self, *shape, scale=0.2):
        # Rounded to float32, the dtype the adapters are stored in, so the reference starts from
        # the stored values.
        t = torch.randn(*shape, generator=self.gen, dtype=torch.float64) * scale
        return t.to(torch.float32).to(torch.float64)

    def apply(self, name, updown, scale, dora=None):
        orig = self.merged.get(name, self.weights[name][0])
        updown = updown.reshape(orig.shape)
        if dora is not None:
            updown = decompose(updown, orig, dora)
        mult = UNET_MULT if name.startswith("unet/") else TE_MULT
        self.merged[name] = orig + updown * scale * mult

    def save(self, case, dtype=torch.float32):
        os.makedirs(OUT, exist_ok=True)
        save_file(
            {k: (v if v.dtype == torch.bool else v.to(dtype)).contiguous() for k, v in self.tensors.items()},
            os.path.join(OUT, f"{self.model}_{case}.safetensors"),
        )
        save_file(
            {k: v.to(torch.float32).contiguous() for k, v in self.merged.items()},
            os.path.join(OUT, f"{self.model}_{case}_merged.safetensors"),
        )


def stored_adapter(t, dtype):
    """The value the Rust side reads: the tensor rounded to its stored dtype."""
    return t.to(dtype).to(torch.float64)


def lora_case(c, targets, key_of, rank=2, alpha=3.0, dtype=torch.float32, dora=False, conv_mid=False):
    for name in targets:
        w = c.weights[name][0]
        key = key_of(name)
        out_ch, in_ch = w.shape[0], w.shape[1]
        if w.dim() == 4:
            k = w.shape[2]
            if conv_mid and k == 3:
                down = c.randn(rank, in_ch, 1, 1)
                mid = c.randn(rank, rank, k, k)
            else:
                down = c.randn(rank, in_ch, k, k)
                mid = None
            up = c.randn(out_ch, rank, 1, 1)
        else:
            down, up, mid = c.randn(rank, in_ch), c.randn(out_ch, rank), None
        c.tensors[f"{key}.lora_down.weight"] = down
        c.tensors[f"{key}.lora_up.weight"] = up
        if mid is not None:
            c.tensors[f"{key}.lora_mid.weight"] = mid
        c.tensors[f"{key}.alpha"] = torch.tensor(alpha, dtype=torch.float64)
        d, u = stored_adapter(down, dtype), stored_adapter(up, dtype)
        m = stored_adapter(mid, dtype) if mid is not None else None
        ds = None
        if dora:
            ds = 1.0 + c.randn(1, in_ch, scale=0.1)
            c.tensors[f"{key}.dora_scale"] = ds
            ds = stored_adapter(ds, dtype)
        c.apply(name, lora_updown(u, d, m, w.shape), alpha / rank, ds)


def loha_case(c, targets, rank=2, alpha=1.0, tucker_on=()):
    for name in targets:
        w = c.weights[name][0]
        key = kohya_name(name)
        out_ch, in_ch = w.shape[0], w.shape[1]
        if name in tucker_on and w.dim() == 4:
            k = w.shape[2]
            t = {}
            for i in (1, 2):
                t[i] = (c.randn(rank, rank, k, k), c.randn(rank, out_ch), c.randn(rank, in_ch))
                c.tensors[f"{key}.hada_t{i}"] = t[i][0]
                c.tensors[f"{key}.hada_w{i}_a"] = t[i][1]
                c.tensors[f"{key}.hada_w{i}_b"] = t[i][2]
            w1 = rebuild_tucker(*t[1])
            w2 = rebuild_tucker(*t[2])
        else:
            flat = w[0].numel()
            w1a, w1b, w2a, w2b = (
                c.randn(out_ch, rank), c.randn(rank, flat), c.randn(out_ch, rank), c.randn(rank, flat),
            )
            c.tensors.update({
                f"{key}.hada_w1_a": w1a, f"{key}.hada_w1_b": w1b,
                f"{key}.hada_w2_a": w2a, f"{key}.hada_w2_b": w2b,
            })
            w1, w2 = w1a @ w1b, w2a @ w2b
        c.tensors[f"{key}.alpha"] = torch.tensor(alpha, dtype=torch.float64)
        c.apply(name, w1 * w2, alpha / rank)


def lokr_case(c, targets):
    for name in targets:
        w = c.weights[name][0]
        key = kohya_name(name)
        out_ch, in_ch = w.shape[0], w.shape[1]
        a, b = 4, 4 if in_ch % 4 == 0 else 1
        if w.dim() == 4:
            w1 = c.randn(a, b)
            w2 = c.randn(out_ch // a, in_ch // b, *w.shape[2:])
            c.tensors[f"{key}.lokr_w1"] = w1
            c.tensors[f"{key}.lokr_w2"] = w2
            up = torch.kron(w1.unsqueeze(2).unsqueeze(2), w2).reshape(w.shape)
            scale = 1.0  # no factored part: A1111 leaves dim None, scale 1
        else:
            rank, alpha = 2, 4.0
            w1 = c.randn(a, b)
            w2a, w2b = c.randn(out_ch // a, rank), c.randn(rank, in_ch // b)
            c.tensors.update({f"{key}.lokr_w1": w1, f"{key}.lokr_w2_a": w2a, f"{key}.lokr_w2_b": w2b})
            c.tensors[f"{key}.alpha"] = torch.tensor(alpha, dtype=torch.float64)
            up = torch.kron(w1, w2a @ w2b)
            scale = alpha / rank
        c.apply(name, up, scale)


def ia3_case(c, targets_out, targets_in):
    for name, on_input in [(n, False) for n in targets_out] + [(n, True) for n in targets_in]:
        orig = c.merged.get(name, c.weights[name][0])
        key = kohya_name(name)
        n = orig.shape[1] if on_input else orig.shape[0]
        v = c.randn(n)
        c.tensors[f"{key}.weight"] = v
        c.tensors[f"{key}.on_input"] = torch.tensor(on_input)
        # network_ia3.calc_updown
        w = v if on_input else v.reshape(-1, 1)
        c.apply(name, orig * w, 1.0)


def peft_case(c, targets, rank=2):
    for name in targets:
        w = c.weights[name][0]
        part, module = name.split("/", 1)
        module = module[: -len(".weight")]
        a, b = c.randn(rank, w.shape[1]), c.randn(w.shape[0], rank)
        c.tensors[f"{part}.{module}.lora_A.weight"] = a
        c.tensors[f"{part}.{module}.lora_B.weight"] = b
        # PEFT LoraLayer.merge: W += (lora_alpha / r) * B @ A; diffusers sets lora_alpha = r when
        # the file stores no alpha.
        c.apply(name, b @ a, 1.0)


def main():
    cases = {}
    for model in ("sd1_tiny", "sd2_tiny"):
        weights = stored_weights(model)
        names = sorted(weights)
        def first(pattern, conv=None):
            for n in names:
                if pattern in n and n.endswith(".weight") and (conv is None or (weights[n][0].dim() == 4) == conv):
                    if conv and weights[n][0].shape[2] != 3:
                        continue
                    return n
            raise KeyError(pattern)
        attn = [n for n in names if "transformer_blocks.0.attn" in n and n.endswith((".to_q.weight", ".to_k.weight", ".to_v.weight", ".to_out.0.weight")) and n.startswith("unet/down_blocks.0")]
        ff = [first("unet/down_blocks.0.attentions.0.transformer_blocks.0.ff.net.0.proj.weight"), first("ff.net.2.weight")]
        proj = [first("unet/down_blocks.0.attentions.0.proj_in.weight")]
        conv3 = [first("unet/down_blocks.0.resnets.0.conv1.weight", conv=True), first("unet/up_blocks.1.resnets.0.conv2.weight", conv=True)]
        skip = [first("conv_shortcut.weight")]
        te = [n for n in names if n.startswith("text_encoder/text_model.encoder.layers.0.") and n.endswith(("q_proj.weight", "k_proj.weight", "v_proj.weight", "out_proj.weight", "fc1.weight"))]
        mid_attn = [n for n in names if n.startswith("unet/mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight")]
        gen = torch.Generator().manual_seed(1234 if model == "sd1_tiny" else 5678)

        def run(case, fill, dtype=torch.float32):
            c = Case(model, weights, gen)
            fill(c)
            c.save(case, dtype)
            cases[f"{model}_{case}"] = dict(model=model, te=TE_MULT, unet=UNET_MULT, patched=len(c.merged))

        run("kohya", lambda c: lora_case(c, attn + ff + proj + conv3 + skip + te + mid_attn, kohya_name))
        run("kohya_ldm", lambda c: lora_case(
            c, attn + conv3 + skip + mid_attn, lambda n: ldm_name(weights[n][1]), dtype=torch.float16),
            torch.float16)
        run("locon_cp", lambda c: lora_case(c, conv3 + proj, kohya_name, rank=3, alpha=1.5, conv_mid=True))
        run("loha", lambda c: loha_case(c, attn[:2] + conv3 + te[:2], tucker_on=conv3[:1]))
        run("lokr", lambda c: lokr_case(c, attn[:2] + ff[:1] + conv3[:1]))
        run("ia3", lambda c: ia3_case(c, attn[1:3] + te[:1], ff[1:]))
        run("dora", lambda c: lora_case(c, attn + ff + te[:2], kohya_name, rank=2, alpha=2.0, dora=True))
        run("peft", lambda c: peft_case(c, attn + ff + te))
    with open(os.path.join(OUT, "adapters_reference.json"), "w") as f:
        json.dump(cases, f, indent=1, sort_keys=True)


# --- Hypernetworks ------------------------------------------------------------------------------
#
# A1111 `modules/hypernetworks/hypernetwork.py`, reimplemented: `HypernetworkModule.__init__`
# builds the Sequential, `forward` is `x + linear(x) * multiplier` (dropout off at inference),
# `Hypernetwork.save` writes the dict below, `apply_hypernetworks` maps the attention context
# (the hidden state itself for self-attention) to the key and value inputs.

ACTIVATIONS = {
    "linear": torch.nn.Identity,
    "relu": torch.nn.ReLU,
    "leakyrelu": torch.nn.LeakyReLU,
    "elu": torch.nn.ELU,
    "swish": torch.nn.Hardswish,
    "tanh": torch.nn.Tanh,
    "sigmoid": torch.nn.Sigmoid,
}


def hyper_module(dim, layer_structure, activation_func, add_layer_norm, activate_output, dropout_structure, gen):
    linears = []
    for i in range(len(layer_structure) - 1):
        linears.append(torch.nn.Linear(int(dim * layer_structure[i]), int(dim * layer_structure[i + 1])))
        if activation_func == "linear" or activation_func is None or (i >= len(layer_structure) - 2 and not activate_output):
            pass
        else:
            linears.append(ACTIVATIONS[activation_func]())
        if add_layer_norm:
            linears.append(torch.nn.LayerNorm(int(dim * layer_structure[i + 1])))
        if dropout_structure is not None and dropout_structure[i + 1] > 0:
            linears.append(torch.nn.Dropout(p=dropout_structure[i + 1]))
    seq = torch.nn.Sequential(*linears)
    with torch.no_grad():
        for p in seq.parameters():
            p.copy_((torch.randn(p.shape, generator=gen) * 0.3).to(torch.float32))
    module = torch.nn.Module()
    module.linear = seq
    return module.eval()


HYPERNETS = {
    # relu, layer norm, an explicit dropout after the first linear
    "hn_relu_ln": dict(layer_structure=[1, 2, 1], activation_func="relu", is_layer_norm=True,
                       activate_output=True, use_dropout=True, dropout_structure=[0, 0.3, 0],
                       last_layer_dropout=False, multiplier=0.8),
    # "swish" (Hardswish), not on the output, three linears
    "hn_swish": dict(layer_structure=[1, 1.5, 2, 1], activation_func="swish", is_layer_norm=False,
                     activate_output=False, use_dropout=False, dropout_structure=None,
                     last_layer_dropout=False, multiplier=0.6),
}
HYPER_SIZES = [16, 32, 64]  # the tiny SD1 model's context width and attention channel counts


def make_hypernet(name, spec, gen):
    layers = {}
    for size in HYPER_SIZES:
        layers[size] = [
            hyper_module(size, spec["layer_structure"], spec["activation_func"], spec["is_layer_norm"],
                         spec["activate_output"], spec["dropout_structure"], gen)
            for _ in range(2)
        ]
    state = {size: [m.state_dict() for m in pair] for size, pair in layers.items()}
    state.update({
        "step": 100, "name": name, "layer_structure": spec["layer_structure"],
        "activation_func": spec["activation_func"], "is_layer_norm": spec["is_layer_norm"],
        "weight_initialization": "Normal", "sd_checkpoint": "0000000000", "sd_checkpoint_name": "sd1_tiny",
        "activate_output": spec["activate_output"], "use_dropout": spec["use_dropout"],
        "dropout_structure": spec["dropout_structure"], "last_layer_dropout": spec["last_layer_dropout"],
        "optional_info": None,
    })
    torch.save(state, os.path.join(OUT, f"{name}.pt"))
    return layers


def hyper_forward(module, x, multiplier):
    return x + module.linear(x) * multiplier


def apply_hypernetworks(active, context):
    k, v = context, context
    for layers, multiplier in active:
        pair = layers.get(context.shape[2])
        if pair is None:
            continue
        k = hyper_forward(pair[0], k, multiplier)
        v = hyper_forward(pair[1], v, multiplier)
    return k, v


class HyperProcessor:
    """A diffusers attention processor doing what A1111's hijacked CrossAttention.forward does."""

    def __init__(self, active):
        self.active = active

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kw):
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        ck, cv = apply_hypernetworks(self.active, context)
        q, k, v = attn.to_q(hidden_states), attn.to_k(ck), attn.to_v(cv)
        b, n, _ = q.shape
        h = attn.heads

        def split(t):
            return t.reshape(b, t.shape[1], h, -1).transpose(1, 2)
        out = torch.nn.functional.scaled_dot_product_attention(split(q), split(k), split(v))
        out = out.transpose(1, 2).reshape(b, n, -1)
        return attn.to_out[1](attn.to_out[0](out))


def hypernet_references():
    import sys
    sys.path.insert(0, os.path.dirname(__file__))
    import model_make_tiny as tiny

    gen = torch.Generator().manual_seed(4321)
    tensors, meta = {}, {}
    nets = {}
    for name, spec in HYPERNETS.items():
        layers = make_hypernet(name, spec, gen)
        for m in (m for pair in layers.values() for m in pair):
            m.double()
        nets[name] = layers
        meta[name] = dict(multiplier=spec["multiplier"])
        for size in HYPER_SIZES:
            x = torch.randn(2, 5, size, generator=gen, dtype=torch.float64).to(torch.float32).double()
            tensors[f"{name}_{size}_x"] = x
            for i, which in enumerate(("k", "v")):
                tensors[f"{name}_{size}_{which}"] = hyper_forward(layers[size][i], x, spec["multiplier"])
    # The tiny SD1 UNet with both hypernetworks, in order, on every attention.
    unet, vae, text, _ = tiny.make(tiny.SD1, 1)
    tiny.reload(tiny.SD1, unet, vae, text, os.path.join(MODEL_DIR, "sd1_tiny.safetensors"))
    unet = unet.double().eval()
    latents = torch.randn(1, 4, 8, 8, generator=gen, dtype=torch.float64)
    context = torch.randn(1, 77, 16, generator=gen, dtype=torch.float64)
    timestep = 500.0
    with torch.no_grad():
        plain = unet(latents, timestep, encoder_hidden_states=context).sample
        active = [(nets[n], HYPERNETS[n]["multiplier"]) for n in HYPERNETS]
        unet.set_attn_processor(HyperProcessor(active))
        hyper = unet(latents, timestep, encoder_hidden_states=context).sample
    tensors.update(unet_latents=latents, unet_context=context, unet_plain=plain, unet_hyper=hyper)
    meta["unet"] = dict(timestep=timestep, order=list(HYPERNETS))
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(OUT, "hypernetworks_reference.safetensors"))
    with open(os.path.join(OUT, "hypernetworks_reference.json"), "w") as f:
        json.dump(meta, f, indent=1, sort_keys=True)
    print("hypernetwork UNet change, max abs:", (hyper - plain).abs().max().item())


# --- A full short sampling run with a LoRA, a negative embedding and a hypernetwork -------------
#
# `pipeline_reference.py`'s A1111 procedure on the tiny SD1 model, float64, with:
#   * the LoRA `sd1_tiny_kohya` at te 0.7 / unet 1.3 (its merged weights from above) and the
#     hypernetwork `hn_relu_ln` at 0.8, both named by tags that A1111's `parse_prompt` removes
#     from the prompt (`re.sub`, which leaves the spaces around them);
#   * the embedding `tinyneg` (A1111 `.pt`, 2 vectors) in the negative prompt: A1111
#     `tokenize_line` puts `[0] * vectors` ids and the prompt weight in its place, and
#     `EmbeddingsWithFixes` swaps the vectors into the token embeddings before the positions.

FULL_PROMPT = "a cat <lora:sd1_tiny_kohya:0.7:1.3>sitting on a table, <hypernet:hn_relu_ln:0.8> photo"
FULL_NEGATIVE = "lowres, tinyneg, bad anatomy"
FULL_RUN = dict(name="full_lora_ti_hypernet", sampler="Euler a", seed=31, batch_size=1, steps=5,
                cfg_scale=7.0, clip_skip=1, negative_prompt=FULL_NEGATIVE)


def strip_tags(prompt):
    import re
    return re.sub(r"<(\w+):([^>]+)>", "", prompt)


class EmbeddingsWithFixes(torch.nn.Module):
    """A1111 `sd_hijack.EmbeddingsWithFixes` for one batch row."""

    def __init__(self, wrapped):
        super().__init__()
        self.wrapped = wrapped
        self.fixes = []

    def forward(self, input_ids):
        inputs_embeds = self.wrapped(input_ids)
        rows = []
        for row, fixes in zip(inputs_embeds, [self.fixes]):
            for offset, vec in fixes:
                emb = vec.to(row.dtype)
                emb_len = min(row.shape[0] - offset - 1, emb.shape[0])
                row = torch.cat([row[0:offset + 1], emb[0:emb_len], row[offset + 1 + emb_len:]])
            rows.append(row)
        return torch.stack(rows)


def full_run_reference():
    import sys
    import numpy as np
    sys.path.insert(0, os.path.dirname(__file__))
    import model_make_tiny as tiny
    import pipeline_reference as pref
    import prompt_reference as pr

    gen = torch.Generator().manual_seed(999)
    vec = (torch.randn(2, 16, generator=gen, dtype=torch.float64) * 0.5).to(torch.float32)
    emb_dir = os.path.join(OUT, "embeddings")
    os.makedirs(emb_dir, exist_ok=True)
    torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": vec}, "name": "tinyneg",
                "step": 0, "sd_checkpoint": None, "sd_checkpoint_name": None},
               os.path.join(emb_dir, "tinyneg.pt"))
    tok = pr.Sd1Tokenizer()
    emb_ids = tok(["tinyneg"], truncation=False, add_special_tokens=False)["input_ids"][0]

    def tokenize_with_embedding(line):
        # A1111 tokenize_line with `find_embedding_at_position`, chunk length 75, comma
        # backtracking as prompt_reference (the prompts here stay in one chunk).
        parsed = pr.parse_prompt_attention(line)
        tokenized = tok([t for t, _ in parsed], truncation=False, add_special_tokens=False)["input_ids"]
        tokens, mults, fixes = [], [], []
        for ids, (text, weight) in zip(tokenized, parsed):
            i = 0
            while i < len(ids):
                if ids[i:i + len(emb_ids)] == emb_ids:
                    fixes.append((len(tokens), vec.double()))
                    tokens += [0] * vec.shape[0]
                    mults += [weight] * vec.shape[0]
                    i += len(emb_ids)
                else:
                    tokens.append(ids[i])
                    mults.append(weight)
                    i += 1
        assert len(tokens) <= 75
        pad = 75 - len(tokens)
        tokens = [tok.bos_token_id] + tokens + [tok.eos_token_id] * pad + [tok.eos_token_id]
        mults = [1.0] + mults + [1.0] * pad + [1.0]
        return tokens, mults, fixes

    def encode(text_model, prompt, clip_skip, dtype, sd2=False):
        tokens, mults, fixes = tokenize_with_embedding(prompt)
        hook = text_model.embeddings.token_embedding
        hook.fixes = fixes
        z = text_model(input_ids=torch.tensor([tokens])).last_hidden_state
        hook.fixes = []
        mult = torch.tensor([mults], dtype=torch.float32)
        original_mean = z.mean()
        z = z * mult.reshape(mult.shape + (1,)).expand(z.shape)
        return z * (original_mean / z.mean())

    unet, vae, text, _ = tiny.make(tiny.SD1, 1)
    tiny.reload(tiny.SD1, unet, vae, text, os.path.join(MODEL_DIR, "sd1_tiny.safetensors"))
    unet, vae, text = unet.double().eval(), vae.double().eval(), text.double().eval()
    merged = load_file(os.path.join(OUT, "sd1_tiny_kohya_merged.safetensors"))
    us, ts = unet.state_dict(), text.state_dict()
    for k, v in merged.items():
        part, name = k.split("/", 1)
        if part == "unet":
            us[name].copy_(v.double())
        else:
            # `text` is transformers' CLIPTextTransformer (no `text_model.` prefix).
            ts[name[len("text_model."):]].copy_(v.double())
    text.embeddings.token_embedding = EmbeddingsWithFixes(text.embeddings.token_embedding)
    hyper = make_hypernet_layers("hn_relu_ln")
    unet.set_attn_processor(HyperProcessor([(hyper, 0.8)]))
    pref.encode = encode
    pref.PROMPT = strip_tags(FULL_PROMPT)
    with torch.no_grad():
        latent = pref.run((unet, vae, text), FULL_RUN, torch.float64)
        image = pref.to_uint8(pref.decode(vae, latent))
    save_file({"latent": latent.contiguous(), "image": torch.from_numpy(np.ascontiguousarray(image))},
              os.path.join(OUT, "full_run_reference.safetensors"))
    with open(os.path.join(OUT, "full_run_reference.json"), "w") as f:
        json.dump(dict(FULL_RUN, prompt=FULL_PROMPT, width=pref.WIDTH, height=pref.HEIGHT), f, indent=1)
    print("full run: latent max abs", latent.abs().max().item())


def make_hypernet_layers(name):
    """The hypernetwork as saved, read back with torch (the file `hypernet_references` wrote)."""
    state = torch.load(os.path.join(OUT, f"{name}.pt"), weights_only=True)
    spec = HYPERNETS[name]
    layers = {}
    for size in HYPER_SIZES:
        pair = []
        for sd in state[size]:
            m = hyper_module(size, spec["layer_structure"], spec["activation_func"], spec["is_layer_norm"],
                             spec["activate_output"], spec["dropout_structure"], torch.Generator())
            m.load_state_dict(sd)
            pair.append(m.double().eval())
        layers[size] = pair
    return layers


if __name__ == "__main__":
    main()
    hypernet_references()
    full_run_reference()
