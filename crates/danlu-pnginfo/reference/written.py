"""Reads the PNGs danlu wrote (`--rewrite DIR`) with sd-parsers and compares them with danlu's
own reading of the source images.

Usage:
  cargo run -p danlu-pnginfo --example pnginfo -- --rewrite DIR --base BASE.png IMAGES... > danlu.json
  python3 written.py danlu.json DIR

Exits 1 when any field differs. CI runs it through `tests/sd_parsers.rs` (`DANLU_PYTHON`).
"""
import json
import os
import sys

from agreement import FIELDS, from_danlu, from_sd_parsers


def main():
    danlu = json.load(open(sys.argv[1]))
    out_dir = sys.argv[2]
    bad = 0
    n = 0
    for d in danlu:
        if "error" in d or d["source"] == "none":
            continue
        name = os.path.basename(d["path"])
        written = os.path.join(out_dir, name + ".png")
        ours = from_danlu(d)
        theirs = from_sd_parsers(written)
        n += 1
        diffs = [
            f"{f}: {ours.get(f)!r} vs {theirs.get(f)!r}"
            for f in FIELDS
            if ours.get(f) != theirs.get(f)
        ]
        if theirs["tool"] != "AUTOMATIC1111":
            diffs.insert(0, f"generator {theirs['tool']}")
        status = "agree" if not diffs else "; ".join(diffs)
        bad += bool(diffs)
        print(f"| `{name}` | {status} |")
    print(f"\n{n - bad}/{n} written images read back identically by sd-parsers")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
