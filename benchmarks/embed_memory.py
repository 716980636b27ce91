"""Peak memory of ``embed`` (one layer, all layers) against the plain forward pass, each in a fresh process.

    python benchmarks/embed_memory.py [--batch-size 32] [--seconds 10] [--tiny]

A fresh Python process builds the model (fresh full-size weights, or the beats-tiny fixture with --tiny); for each
mode it runs the call once to warm up, resets the kernel's peak-RSS counter (``/proc/self/clear_refs``, Linux), runs
it again and reports ``VmHWM - VmRSS before`` in MB. ``MALLOC_MMAP_THRESHOLD_`` makes glibc return every
large tensor to the kernel when freed, so the peak is the tensors alive at once, not what the allocator kept.
Prints a JSON line per mode; ``measure`` is importable (tests/test_memory.py uses it).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
TINY = HERE.parent / "tests" / "fixtures" / "beats-tiny"
MODES = ("forward", "embed_last", "pooled_all")

_CHILD = r"""
import json, sys, torch
from avex_hub import AvexModel, build_model
from avex_hub.encoder.beats import BEATsConfig
spec = json.loads(sys.argv[1])
torch.set_num_threads(spec["threads"])
torch.manual_seed(0)
if spec["config"] is None:
    model = build_model("esp_aves2_sl_beats_all", checkpoint=spec["tiny"])
else:
    model = AvexModel(BEATsConfig.from_dict(spec["config"]))
audio = 0.1 * torch.randn(spec["batch"], spec["samples"])
calls = {"forward": lambda: model.encode(audio).features,
         "embed_last": lambda: model.embed(audio, layer=-1),
         "pooled_all": lambda: model.pooled_layers(audio, layers="all")}

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024

out = {}
with torch.inference_mode():
    for mode in spec["modes"]:
        calls[mode]()  # warm-up: one-time allocations are not the call's
        before = status("VmRSS")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
        calls[mode]()
        out[mode] = (status("VmHWM") - before) / 1e6
print(json.dumps(out))
"""


def measure(modes=MODES, *, batch: int, samples: int, config: dict | None = None, threads: int = 1,
            timeout: float = 3600) -> dict[str, float]:
    """Peak MB above the resting process for each of ``modes`` (see MODES), measured one after the other in one fresh
    process; ``config`` None means the beats-tiny fixture, else a BEATs config dict with fresh weights."""
    spec = {"modes": list(modes), "batch": batch, "samples": samples, "config": config, "tiny": str(TINY),
            "threads": threads}
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": str(threads)}
    result = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(spec)], capture_output=True, text=True,
                            env=env, cwd=HERE.parent, check=False, timeout=timeout)
    if result.returncode:
        raise RuntimeError(f"memory child failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--tiny", action="store_true", help="the beats-tiny fixture instead of the full-size architecture")
    p.add_argument("--threads", type=int, default=None, help="torch threads in the measuring process (default: all)")
    args = p.parse_args(argv)
    from avex_hub.encoder.beats import BEATsConfig

    config = None if args.tiny else BEATsConfig().to_dict()
    samples = round(args.seconds * 16000)
    import torch

    out = measure(MODES, batch=args.batch_size, samples=samples, config=config,
                  threads=args.threads or torch.get_num_threads())
    for mode, mb in out.items():
        print(json.dumps({"mode": mode, "batch": args.batch_size, "seconds": args.seconds, "peak_mb": round(mb, 1),
                          "vs_forward": round(mb / out["forward"], 3)}))
    return out


if __name__ == "__main__":
    main()
