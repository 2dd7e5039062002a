"""Reference tokenization and prompt weighting for the `prompt` parity tests of danlu-diffusion.

Writes crates/danlu-diffusion/tests/reference/prompt/prompt_reference.json with, for ~300
prompts (the prompts of the A1111/Forge/ComfyUI images in the shared corpus, hand-written edge
cases, and seeded random tag prompts with weights):
  * `parse_prompt_attention` output (A1111 modules/prompt_parser.py, re-written below),
  * token ids of each piece as A1111's SD 1.x tokenizer gives them (transformers 4.x slow
    CLIPTokenizer with ftfy, re-written in `Sd1Tokenizer` on open_clip's CLIP BPE),
  * the chunks of A1111's `tokenize_line` (modules/sd_hijack_clip.py, re-written below):
    ids with SD 1.x padding and with SD 2.x padding (`id_pad = 0`), multipliers, token count;
and an emphasis case: a random encoder output and multipliers through sd_emphasis.py's
"Original" and "No norm".

Made with ftfy 6.3.1, regex 2026.11.19, open_clip_torch 3.3.0, torch 2.15.0.
Run: .venv/bin/python scripts/reference/prompt_reference.py
"""

import glob
import json
import pathlib
import random
import re

import ftfy
import open_clip
import regex
import torch

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "crates/danlu-diffusion/tests/reference/prompt"
CORPUS = ROOT.parent / "shared/corpus/images"


class Sd1Tokenizer:
    """transformers 4.x `CLIPTokenizer` (the slow one A1111 1.10 loads for SD 1.x) with ftfy
    installed: `whitespace_clean(ftfy.fix_text(text)).lower()`, the CLIP word regex, byte-level
    BPE. transformers 5 only ships the fast tokenizer, which cleans text differently, so the slow
    path is re-written here on open_clip's copy of the CLIP BPE (same merges, same vocabulary)."""

    bos_token_id = 49406
    eos_token_id = 49407

    def __init__(self):
        self.oc = open_clip.tokenizer.SimpleTokenizer()

    def get_vocab(self):
        return self.oc.encoder

    def encode(self, text):
        text = open_clip.tokenizer.whitespace_clean(ftfy.fix_text(text)).lower()
        ids = []
        for token in regex.findall(self.oc.pat, text):
            token = "".join(self.oc.byte_encoder[b] for b in token.encode("utf-8"))
            ids.extend(self.oc.encoder[t] for t in self.oc.bpe(token).split(" "))
        return ids

    def __call__(self, texts, truncation=False, add_special_tokens=False):
        return {"input_ids": [self.encode(t) for t in texts]}


# --- A1111 modules/prompt_parser.py parse_prompt_attention, re-written -----------------------
re_attention = re.compile(r"""
\\\(|\\\)|\\\[|\\]|\\\\|\\|\(|\[|:([+-]?[.\d]+)\)|\)|]|[^\\()\[\]:]+|:
""", re.X)
re_break = re.compile(r"\s*\bBREAK\b\s*", re.S)


def parse_prompt_attention(text):
    res, round_brackets, square_brackets = [], [], []

    def multiply_range(start, m):
        for p in range(start, len(res)):
            res[p][1] *= m

    for m in re_attention.finditer(text):
        text, weight = m.group(0), m.group(1)
        if text.startswith('\\'):
            res.append([text[1:], 1.0])
        elif text == '(':
            round_brackets.append(len(res))
        elif text == '[':
            square_brackets.append(len(res))
        elif weight is not None and round_brackets:
            multiply_range(round_brackets.pop(), float(weight))
        elif text == ')' and round_brackets:
            multiply_range(round_brackets.pop(), 1.1)
        elif text == ']' and square_brackets:
            multiply_range(square_brackets.pop(), 1 / 1.1)
        else:
            for i, part in enumerate(re.split(re_break, text)):
                if i > 0:
                    res.append(["BREAK", -1])
                res.append([part, 1.0])
    for pos in round_brackets:
        multiply_range(pos, 1.1)
    for pos in square_brackets:
        multiply_range(pos, 1 / 1.1)
    if len(res) == 0:
        res = [["", 1.0]]
    i = 0
    while i + 1 < len(res):
        if res[i][1] == res[i + 1][1]:
            res[i][0] += res[i + 1][0]
            res.pop(i + 1)
        else:
            i += 1
    return res


# --- A1111 modules/sd_hijack_clip.py tokenize_line, re-written (no embeddings) ---------------
def tokenize_line(tok, line, comma_padding_backtrack=20, chunk_length=75):
    parsed = parse_prompt_attention(line)
    tokenized = tok([text for text, _ in parsed], truncation=False, add_special_tokens=False)["input_ids"]
    id_start, id_end, comma = tok.bos_token_id, tok.eos_token_id, tok.get_vocab()[",</w>"]
    chunks, chunk = [], {"tokens": [], "multipliers": []}
    state = {"token_count": 0, "last_comma": -1}

    def next_chunk(is_last=False):
        nonlocal chunk
        state["token_count"] += len(chunk["tokens"]) if is_last else chunk_length
        to_add = chunk_length - len(chunk["tokens"])
        if to_add > 0:
            chunk["tokens"] += [id_end] * to_add
            chunk["multipliers"] += [1.0] * to_add
        chunk["tokens"] = [id_start] + chunk["tokens"] + [id_end]
        chunk["multipliers"] = [1.0] + chunk["multipliers"] + [1.0]
        state["last_comma"] = -1
        chunks.append(chunk)
        chunk = {"tokens": [], "multipliers": []}

    for tokens, (text, weight) in zip(tokenized, parsed):
        if text == 'BREAK' and weight == -1:
            next_chunk()
            continue
        position = 0
        while position < len(tokens):
            token = tokens[position]
            if token == comma:
                state["last_comma"] = len(chunk["tokens"])
            elif comma_padding_backtrack != 0 and len(chunk["tokens"]) == chunk_length and \
                    state["last_comma"] != -1 and len(chunk["tokens"]) - state["last_comma"] <= comma_padding_backtrack:
                brk = state["last_comma"] + 1
                reloc_tokens, reloc_mults = chunk["tokens"][brk:], chunk["multipliers"][brk:]
                chunk["tokens"], chunk["multipliers"] = chunk["tokens"][:brk], chunk["multipliers"][:brk]
                next_chunk()
                chunk["tokens"], chunk["multipliers"] = reloc_tokens, reloc_mults
            if len(chunk["tokens"]) == chunk_length:
                next_chunk()
            chunk["tokens"].append(token)
            chunk["multipliers"].append(weight)
            position += 1
    if chunk["tokens"] or not chunks:
        next_chunk(is_last=True)
    return parsed, tokenized, chunks, state["token_count"]


def sd2_ids(tokens, id_end=49407, id_pad=0):
    tokens = list(tokens)
    index = tokens.index(id_end)
    return tokens[:index + 1] + [id_pad] * (len(tokens) - index - 1)


HANDWRITTEN = [
    "", "a cat", "normal text", "an (important) word", "(unbalanced", "\\(literal\\]",
    "(unnecessary)(parens)", "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
    "masterpiece, best quality, (1girl:1.2), [[lowres]], ((detailed eyes)), (blush:0.8)",
    "a BREAK b", "a  BREAK\tb BREAKFAST", "(a BREAK b)", "BREAK", "BREAK BREAK x",
    "(a:-1.5) b", "(a:+.5) [b:3] c:d", "a\\b c\\\\d", "[[a]] (((b)))",
    "((a) [b] (c:0.9)) d]", "emoji 🐱 test 🚀✨", "テスト, 日本語のプロンプト, 猫",
    "中文提示词，风景，山水", "Привет мир", "café résumé naïve", "\u201ccurly\u201d \u2018quotes\u2019",
    "ＦＵＬＬ　ｗｉｄｔｈ", "&amp; &lt;tag&gt; &quot;q&quot;", "don't won't it's we're they've I'm we'll he'd",
    "UPPER lower MiXeD", "1girl, 2boys, 3D render, 8k, 16:9, f/1.8, 35mm",
    "a, " * 40 + "end", ", ".join(f"tag{i}" for i in range(60)),
    " ".join(["word"] * 80), "(" + ", ".join(f"red apple{i}" for i in range(30)) + ":1.1)",
    "line one\nline two\r\nline three", "tabs\tand   spaces", "trailing space ", "a,b,c,,,d",
    "score_9, score_8_up, source_anime, rating_safe", "<lora:foo:0.8> a photo", "a [cat|dog] b",
    "[cat:dog:0.5] sitting", "a (cat:1.2) AND a dog", "\\\\(not escaped)",
]

TAGS = ["masterpiece", "best quality", "1girl", "solo", "long hair", "blue eyes", "smile",
        "outdoors", "sky", "cloud", "tree", "city", "night", "neon lights", "portrait",
        "photorealistic", "cinematic lighting", "bokeh", "depth of field", "sharp focus",
        "highly detailed", "8k uhd", "dslr", "film grain", "Fujifilm XT3", "oil painting",
        "watercolor", "by greg rutkowski", "trending on artstation", "cyberpunk", "steampunk",
        "a cat sitting on a windowsill", "red dress", "white background", "hatsune miku",
        "lowres", "bad anatomy", "bad hands", "text", "error", "missing fingers", "cropped",
        "worst quality", "jpeg artifacts", "signature", "watermark", "username", "blurry",
        "café", "東京", "ねこ", "dragon 🐉", "l'été", "naïve art", "grüße"]


def random_prompts(n, seed=20261125):
    rnd = random.Random(seed)
    out = []
    for _ in range(n):
        parts = []
        for _ in range(rnd.randint(1, 45)):
            t = rnd.choice(TAGS)
            r = rnd.random()
            if r < 0.15:
                t = f"({t}:{rnd.choice(['0.5', '0.8', '1.1', '1.2', '1.25', '1.4', '1.5', '2'])})"
            elif r < 0.25:
                t = "(" * rnd.randint(1, 3) + t + ")" * rnd.randint(0, 3)
            elif r < 0.32:
                t = "[" * rnd.randint(1, 2) + t + "]" * rnd.randint(0, 2)
            elif r < 0.34:
                t = "BREAK " + t
            elif r < 0.36:
                t = t.replace(" ", "\\(") + "\\)"
            parts.append(t)
        out.append(rnd.choice([", ", ",", " ", ", "]).join(parts))
    return out


def corpus_prompts():
    from PIL import Image
    out = []
    for f in sorted(glob.glob(str(CORPUS / "*.png"))):
        try:
            p = Image.open(f).info.get("parameters")
        except Exception:
            continue
        if not p or p.startswith("{"):
            continue
        try:
            # Pillow decodes tEXt as Latin-1; A1111 writes UTF-8 there (mojibake repair is
            # ftfy's job, which danlu does not do).
            p = p.encode("latin-1").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            pass
        text = p.rsplit("\nSteps: ", 1)[0]
        pos, _, neg = text.partition("\nNegative prompt: ")
        out += [pos, neg]
    return list(dict.fromkeys(out))


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    tok = Sd1Tokenizer()
    oc = tok.oc
    prompts = corpus_prompts() + HANDWRITTEN + random_prompts(230)
    cases = []
    open_clip_disagreements = 0
    for p in prompts:
        parsed, tokenized, chunks, count = tokenize_line(tok, p)
        for (text, _), ids in zip(parsed, tokenized):
            if text != "BREAK" and oc.encode(text) != ids:
                open_clip_disagreements += 1
        cases.append({
            "prompt": p,
            "parsed": [[t, w] for t, w in parsed],
            "piece_ids": tokenized,
            "sd1_ids": [c["tokens"] for c in chunks],
            # SD 2.x padding for the first cases only, to keep the file small.
            "sd2_ids": [sd2_ids(c["tokens"]) for c in chunks] if len(cases) < 60 else None,
            "multipliers": [[float(torch.tensor(m, dtype=torch.float32)) for m in c["multipliers"]] for c in chunks],
            "token_count": count,
        })

    g = torch.Generator().manual_seed(7)
    z = torch.randn((2, 77, 8), generator=g) + 0.3
    mult = torch.ones((2, 77))
    mult[0, 3:9] = 1.21
    mult[1, 10:20] = 1 / 1.1
    mult[1, 40] = 1.5
    original_mean = z.mean()
    zz = z * mult.reshape(mult.shape + (1,)).expand(z.shape)
    original = zz * (original_mean / zz.mean())
    emphasis = {"z": z.flatten().tolist(), "multipliers": mult.flatten().tolist(),
                "original": original.flatten().tolist(), "no_norm": zz.flatten().tolist()}
    ref = {"cases": cases, "emphasis": emphasis, "open_clip_piece_disagreements": open_clip_disagreements}
    (OUT / "prompt_reference.json").write_text(json.dumps(ref, ensure_ascii=False))
    print(len(cases), "prompts;", open_clip_disagreements, "pieces where open_clip's tokenizer differs")


if __name__ == "__main__":
    main()
