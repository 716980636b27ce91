"""Extraction speed at the clip lengths the benchmark suites embed, as ratios to the model's 10 s window.

    python benchmarks/suite_budget.py                     # CPU, fp32, batch 4, 3 interleaved rounds
    python benchmarks/suite_budget.py --device cuda --precision bf16 --batch-size 64

The suites embed clips of 1 s (Speech Commands), 2 s (dcase, enabirds windows), 3 s (Watkins, HumBugDB), 4 s
(hainan-gibbons windows), 5 s (ESC-50, bats, BirdSet, the manifest suites) and 10 s (cbi, dogs, hiceas and rfcx
windows, BEANS-Zero). The esp-aves2 architecture (fresh weights: speed does not depend on their values) pools the
last layer of batches of random audio of each length; the lengths are timed in interleaved rounds and each keeps
its best batch, so load from other work on the machine affects them alike and the ratios hold where the absolute
numbers do not. README's evaluation budget multiplies these ratios by the 10 s rate measured on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import avex_hub  # noqa: E402
from avex_hub.encoder.precision import inference_context, prepare_for_inference, resolve_device  # noqa: E402
from throughput import machine  # noqa: E402

LENGTHS_S = (1.0, 2.0, 3.0, 4.0, 5.0, 10.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=None, help="also write the JSON lines here")
    args = parser.parse_args()
    device = resolve_device(args.device)
    model = avex_hub.build_model("esp_aves2_sl_beats_all", pretrained=False, return_features_only=True, device=device)
    runner = prepare_for_inference(model, args.precision, device)
    best = {length: float("inf") for length in LENGTHS_S}
    batches = {length: torch.randn(args.batch_size, int(length * model.sample_rate), device=device) * 0.1
               for length in LENGTHS_S}
    for round_ in range(args.rounds + 1):  # round 0 warms every length up and is not kept
        for length, audio in batches.items():
            start = time.perf_counter()
            with inference_context(args.precision, device):
                runner.pooled_layers(audio, None, layers=[model.num_layers], pooling="mean")
            if device.type == "cuda":
                torch.cuda.synchronize()
            if round_:
                best[length] = min(best[length], time.perf_counter() - start)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    rows = [{"clip_s": length, "audio_s_per_s": args.batch_size * length / best[length],
             "vs_10s": (args.batch_size * length / best[length]) / (args.batch_size * 10.0 / best[10.0])}
            for length in LENGTHS_S]
    meta = machine(device) | {"device": str(device), "precision": args.precision, "batch_size": args.batch_size,
                              "rounds": args.rounds, "load_average": load}
    lines = [json.dumps(meta)] + [json.dumps(row) for row in rows]
    print("\n".join(lines))
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
