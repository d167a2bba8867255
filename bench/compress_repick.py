"""The pick rule now in the code (latency pooled per structure, 5% ties) applied to the fronts that run 2 of
`bench/compress.py`'s command part produced (their run directories copied to /tmp/s11/cmd2-fm*), that pick
scored on the test part from its exported front model. Writes bench/results/compress_repick.json.

    python bench/compress_repick.py
"""

import json
import statistics as st
import sys

import torch

sys.path.insert(0, "/work/main/bench")
from pathlib import Path

from compress import run_data
from tunelab.export import load

out = {}
for name in ("fm0", "fm1", "fm2"):
    d = Path(f"/tmp/s11/cmd2-{name}")
    if not (d / "compression.json").exists():
        continue
    r = json.loads((d / "compression.json").read_text())
    o = r["original"]

    def key(e):
        p = e["params"]
        q = p["quant"]
        return (
            p["width"],
            q,
            (p["fmt"] if q == "static" else "") + ("+first-float" if q != "none" and p["keep_first"] else ""),
        )

    groups = {}
    for e in r["front"]:
        groups.setdefault(key(e), []).append(e)
    lat = {k: {b: st.median(x["latency_ms"][b] for x in v) for b in ("1", "256")} for k, v in groups.items()}
    low = r["reference"]["value"] - r["allowed_drop"]
    eligible = [
        e
        for e in r["front"]
        if e["val_score"] >= low and all(lat[key(e)][b] <= o["latency_ms"][b] for b in ("1", "256"))
    ]
    fastest = min(lat[key(e)]["256"] for e in eligible)
    tied = [e for e in eligible if lat[key(e)]["256"] <= fastest * 1.05]
    best = max(tied, key=lambda e: (e["val_score"], -e["deflated_bytes"]))
    b = run_data(Path(f"/tmp/s11/{name}"))
    m = load(d / "compression" / "front" / str(best["trial"]))
    with torch.no_grad():
        acc = (m.module(b.X_test).argmax(1) == b.y_test).float().mean().item()
    orig_test = r["pick"]["test"]["original"]
    out[name] = {
        "trial": best["trial"],
        "knobs": best["knobs"],
        "val": best["val_score"],
        "test": acc,
        "original_test": orig_test,
        "test_loss_points": 100 * (orig_test - acc),
        "smaller_deflated": o["deflated_bytes"] / best["deflated_bytes"],
        "smaller_file": o["bytes"] / best["bytes"],
        "faster_256": o["latency_ms"]["256"] / lat[key(best)]["256"],
        "command_pick": r["pick"]["trial"],
        "command_pick_test": r["pick"]["test"]["accuracy"],
        "front": len(r["front"]),
        "screened_share": r["candidates"]["screened_share"],
        "trained": r["candidates"]["trained"],
        "screened": r["candidates"]["screened"],
    }
    print(name, json.dumps(out[name]))
Path(__file__).with_name("results").joinpath("compress_repick.json").write_text(json.dumps(out, indent=2))
