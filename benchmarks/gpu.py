"""GPU throughput: bf16 autocast, each scaled-dot-product-attention backend, a batch sweep. For when a GPU is lent.

    python benchmarks/gpu.py [--batch-sizes 8,16,32,64,128,256] [--seconds 10] [--rounds 5]
    python benchmarks/gpu.py --device cpu --tiny --batch-sizes 2 --rounds 1   # smoke run of the code path

For each batch size and each SDPA backend that accepts BEATs' attention (an additive float mask: the
relative-position bias, so flash attention is not eligible; memory-efficient and math are), times
``embed`` on 10 s windows under ``torch.autocast(dtype=torch.bfloat16)`` (and fp32 with TF32 matmuls for
reference), best of ``--rounds`` after a warm-up, with ``torch.cuda.synchronize``. Reports audio s / s,
GFLOP/s (98.5 GFLOP per 10 s window for the full-size model) and peak CUDA memory; a batch that runs out
of memory is reported as such and ends that backend's sweep. Prints one JSON line per measurement. Name
the GPU (it is printed) beside every number you quote.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import avex_hub  # noqa: E402
from speed import best_seconds, gflop_per_window  # noqa: E402
from throughput import TINY, clips, machine  # noqa: E402

BACKENDS = {"efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH, "cudnn": SDPBackend.CUDNN_ATTENTION,
            "flash": SDPBackend.FLASH_ATTENTION}  # flash: CUDA refuses the float mask; the CPU kernel takes it


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_embed(model, audio, device, precision: str, backend, rounds: int) -> float:
    """Best seconds per batch."""
    def once():
        with torch.inference_mode(), sdpa_kernel([backend]), \
                torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            model.embed(audio)
        sync(device)

    return best_seconds(once, rounds)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch-sizes", default="8,16,32,64,128,256")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--backends", default="efficient,math,cudnn")
    p.add_argument("--precisions", default="bf16,fp32")
    p.add_argument("--tiny", action="store_true", help="the beats-tiny checkpoint (smoke runs)")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    print(json.dumps(machine(device)))
    torch.manual_seed(0)
    if args.tiny:
        model = avex_hub.build_model("esp_aves2_sl_beats_all", checkpoint=TINY)
    else:
        model = avex_hub.build_model("esp_aves2_sl_beats_all", pretrained=False, return_features_only=True)
    model = model.to(device).eval()
    gflop = gflop_per_window(model.config, args.seconds)
    for precision in args.precisions.split(","):
        for name in args.backends.split(","):
            for batch in (int(b) for b in args.batch_sizes.split(",")):
                audio = clips(batch, args.seconds).to(device)
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                row = {"precision": precision, "sdpa": name, "batch": batch}
                try:
                    best = time_embed(model, audio, device, precision, BACKENDS[name], args.rounds)
                except torch.OutOfMemoryError:
                    print(json.dumps({**row, "error": "out of memory"}))
                    torch.cuda.empty_cache()
                    break
                except RuntimeError as error:  # a backend that refuses these inputs
                    print(json.dumps({**row, "error": str(error).splitlines()[0][:200]}))
                    break
                row.update(audio_s_per_s=round(batch * args.seconds / best, 1),
                           gflops=round(batch * gflop / best, 1))
                if device.type == "cuda":
                    row["peak_mem_gb"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
                print(json.dumps(row))


if __name__ == "__main__":
    main()
