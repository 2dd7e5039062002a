"""Compares danlu's pnginfo output with sd-parsers and sd-prompt-reader (PyPI).

Usage:
  cargo run -p danlu-pnginfo --example pnginfo -- IMAGES... > danlu.json
  python3 agreement.py danlu.json > table.md

Needs `pip install sd-parsers sd-prompt-reader piexif`. Reference tooling: not run by CI.
Prompts are compared with every line stripped (A1111's parser strips each line); numbers as
floats; `-` means the reader gave nothing.
"""
import json
import sys


def norm_text(s):
    if s is None:
        return None
    return "\n".join(line.strip() for line in str(s).strip().split("\n")).strip()


def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def from_danlu(d):
    if "error" in d:
        return {"tool": "error"}
    size = f"{d['width']}x{d['height']}" if d.get("width") else None
    return {
        "tool": d["source"],
        "prompt": norm_text(d["prompt"]) or None,
        "negative": norm_text(d["negative_prompt"]) or None,
        "seed": num(d["seed"]),
        "steps": num(d["steps"]),
        "cfg": num(d["cfg_scale"]),
        "sampler": d["sampler"],
        "model": d["model"],
        "size": size,
    }


def from_sd_parsers(path):
    from sd_parsers import ParserManager

    try:
        r = ParserManager().parse(path)
    except Exception as e:  # noqa: BLE001 - report any failure
        return {"tool": f"error: {type(e).__name__}"}
    if r is None:
        return {"tool": "none"}
    s = r.samplers[0] if r.samplers else None
    params = s.parameters if s else {}
    model = s.model.name if s and s.model else (next(iter(r.models)).name if r.models else None)
    size = r.metadata.get("Size") or (
        f"{r.metadata.get('width')}x{r.metadata.get('height')}" if r.metadata.get("width") else None
    )
    return {
        "tool": r.generator.value,
        "prompt": norm_text(r.full_prompt) or None,
        "negative": norm_text(r.full_negative_prompt) or None,
        "seed": num(params.get("seed")),
        "steps": num(params.get("steps")),
        "cfg": num(params.get("cfg_scale")),
        "sampler": s.name if s else None,
        "model": model,
        "size": size,
    }


def from_prompt_reader(path):
    from sd_prompt_reader.image_data_reader import ImageDataReader

    try:
        r = ImageDataReader(path)
    except Exception as e:  # noqa: BLE001
        return {"tool": f"error: {type(e).__name__}"}
    if not r.tool:
        return {"tool": "none"}
    p = r.parameter or {}
    size = p.get("size")
    return {
        "tool": r.tool,
        "prompt": norm_text(r.positive) or None,
        "negative": norm_text(r.negative) or None,
        "seed": num(p.get("seed")),
        "steps": num(p.get("steps")),
        "cfg": num(p.get("cfg")),
        "sampler": p.get("sampler"),
        "model": p.get("model"),
        "size": size.replace(" ", "") if isinstance(size, str) else size,
    }


FIELDS = ["prompt", "negative", "seed", "steps", "cfg", "sampler", "model", "size"]


def main():
    danlu = json.load(open(sys.argv[1]))
    print("| image | danlu | sd-parsers | sd-prompt-reader | disagreements |")
    print("|---|---|---|---|---|")
    for d in danlu:
        path = d["path"]
        ours = from_danlu(d)
        sp = from_sd_parsers(path)
        pr = from_prompt_reader(path)
        diffs = []
        for f in FIELDS:
            for name, other in (("sp", sp), ("pr", pr)):
                if other.get("tool", "").startswith(("none", "error")):
                    continue
                a, b = ours.get(f), other.get(f)
                if a != b:
                    short = lambda v: (repr(v)[:40] + "…") if v is not None and len(repr(v)) > 40 else repr(v)
                    diffs.append(f"{f} ({name}): {short(a)} vs {short(b)}")
        name = path.rsplit("/", 1)[-1]
        tools = [t["tool"].replace("\n", " ") for t in (ours, sp, pr)]
        print(f"| `{name}` | {tools[0]} | {tools[1]} | {tools[2]} | {'; '.join(diffs) or 'agree'} |")


if __name__ == "__main__":
    main()
