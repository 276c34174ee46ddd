"""Peak memory of loading a model in float32 vs bfloat16: each dtype in a fresh process, peak RSS by stage.

    .venv/bin/python benchmarks/bench_load_memory.py [--model gemma-3-270m] [--dtypes float32,bfloat16]

Stages: imports done, tokenizer loaded, HF weights loaded (`from_pretrained(dtype=...)`), bridge booted
(`load_model`, the whole path, in the same fresh process after the HF model is freed). Two peaks: RSS
(`ru_maxrss`, which also counts the pages of the memory-mapped safetensors file that were read) and
anonymous memory (`RssAnon`, sampled every 2 ms: what the process itself allocated; a float32 copy of the
weights made before casting would show here). Prints one JSON object per dtype and a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

_CHILD = r"""
import json, resource, sys, threading, time, warnings
warnings.simplefilter("ignore")
def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
def anon_mb():
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    return float("nan")
anon_peak = [0.0]
def sample():
    while True:
        anon_peak[0] = max(anon_peak[0], anon_mb())
        time.sleep(0.002)
threading.Thread(target=sample, daemon=True).start()
name, dtype = sys.argv[1], sys.argv[2]
out = {"model": name, "dtype": dtype}
import torch, transformers, transformer_lens  # noqa: F401
from lens_steer.model.load import checkpoint_folder, load_model, parse_dtype
out["imports_mb"] = peak_mb(); out["imports_anon_mb"] = anon_mb()
folder = checkpoint_folder(name)
from transformers import AutoModelForCausalLM, AutoTokenizer
AutoTokenizer.from_pretrained(folder)
out["tokenizer_mb"] = peak_mb(); anon_before = anon_mb(); anon_peak[0] = anon_before
t = time.time()
hf = AutoModelForCausalLM.from_pretrained(folder, dtype=parse_dtype(dtype))
out["hf_weights_mb"] = peak_mb(); time.sleep(0.01); out["hf_weights_anon_peak_mb"] = anon_peak[0]
out["hf_weights_anon_added_mb"] = anon_peak[0] - anon_before
out["weights_mb"] = sum(p.numel() * p.element_size() for p in hf.parameters()) / 2**20
out["file_dtype"] = "float32 safetensors"
del hf
import gc; gc.collect(); anon_peak[0] = anon_mb()
t = time.time()
model = load_model(name, dtype=dtype)
out["load_model_s"] = round(time.time() - t, 2)
out["load_model_mb"] = peak_mb(); time.sleep(0.01); out["load_model_anon_peak_mb"] = anon_peak[0]
out["param_dtype"] = str(next(model.parameters()).dtype)
print(json.dumps(out))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    args = parser.parse_args()
    rows = []
    for dtype in args.dtypes.split(","):
        res = subprocess.run(
            [sys.executable, "-c", _CHILD, args.model, dtype], capture_output=True, text=True, check=False
        )
        if res.returncode != 0:
            print(res.stderr.strip().splitlines()[-1], file=sys.stderr)
            return 1
        row = json.loads(res.stdout.strip().splitlines()[-1])
        print(json.dumps(row))
        rows.append(row)
    print(
        "\n| dtype | weights in memory | anonymous memory added by `from_pretrained` (peak) "
        "| peak anonymous, whole `load_model` | peak RSS incl. mapped file pages | load s |"
    )
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['dtype']} | {r['weights_mb']:.0f} MB | {r['hf_weights_anon_added_mb']:.0f} MB | "
            f"{r['load_model_anon_peak_mb']:.0f} MB | {r['load_model_mb']:.0f} MB | {r['load_model_s']} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
