"""How close each CPU mode comes to the machine's matmul peak, in one command.

    python benchmarks/speed.py [--quick] [--batch-size 4] [--rounds 6] [--out benchmarks/SPEED.md]

1. The hardware: ``torch.mm`` GFLOP/s in fp32 and bf16 (square matrices, best of a few), i.e. the ceiling.
2. The model: GFLOP per 10 s window counted from the architecture (matmuls and convolutions).
3. Throughput (esp-aves2 architecture, fresh weights: speed does not depend on the values) of fp32, bf16 under
   ``torch.autocast`` (the CLI's ``--precision bf16``), int8 (dynamic quantisation) and the ONNX export (fp32 and
   ``--quantize int8``) under onnxruntime, timed in interleaved rounds (A/B/C/D, A/B/C/D, ...) so other load hits
   all alike; reported as audio seconds per second, GFLOP/s, the fraction of the matching peak, and the ratio to fp32 with its spread
   (min..max over rounds, each round's ratio taken within the round).
4. Accuracy against fp32: min cosine of pooled embeddings (full size), and on the beats-tiny checkpoint top-1
   agreement with the largest fp32 top-2 margin among flipped clips next to the largest logit change.
5. Memory: peak above the resting process of the forward pass, ``embed`` (one layer) and ``pooled_layers("all")``
   (benchmarks/embed_memory.py).

``--quick`` (about 3 minutes on 2 quiet cores) uses smaller matrices, fewer rounds and memory batch 2.
The machine (CPU model, cores, torch) is printed beside every number; say whether it was loaded.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import avex_hub  # noqa: E402
from avex_hub.encoder import fastpath  # noqa: E402
from avex_hub.encoder.precision import inference_context, prepare_for_inference  # noqa: E402
from throughput import TINY, clips, cosine, machine  # noqa: E402


def best_seconds(fn, repeats: int) -> float:
    """Best wall time of ``fn()`` over ``repeats`` calls, after one untimed warm-up call."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def matmul_peak(dtype: torch.dtype, n: int, repeats: int) -> dict:
    """Best GFLOP/s of an ``n x n`` by ``n x n`` matmul in ``dtype``, per kernel: ``torch.mm`` (the BLAS torch was
    built with; oneDNN for bf16) and, where torch has it, oneDNN's linear kernel (what the encoder's float32
    projections run on the CPU). The machine's ceiling is the faster of them."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    kernels = {"torch.mm": lambda: torch.mm(a, b)}
    onednn = fastpath.ONEDNN_LINEAR
    if onednn is not None:
        kernels["onednn"] = lambda: onednn(a, b, None, "none", [], "")
    return {name: 2 * n**3 / best_seconds(fn, repeats) / 1e9 for name, fn in kernels.items()}


def gflop_per_window(config, seconds: float = 10.0) -> float:
    """Multiply-adds x 2 of one window: patch embedding, projection, position convolution, layers, attention."""
    frames = 1 + (round(seconds * 16000) - 400) // 160
    p = config.input_patch_size
    n = (frames // p) * (config.num_mel_bins // p)
    c, f, e = config.encoder_embed_dim, config.encoder_ffn_embed_dim, config.embed_dim
    per_token = e * p * p + (e * c if e != c else 0) + c * (c // config.conv_pos_groups) * config.conv_pos
    per_token += config.encoder_layers * (4 * c * c + 2 * c * f + 2 * n * c)  # projections, FFN, QK^T and AV
    return 2 * n * per_token / 1e9


def onnx_runner(model, threads: int, quantize: str | None = None):
    """The ONNX export of ``model`` under onnxruntime, or None when onnxruntime is missing."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    from avex_hub.integrations.onnx_export import export_onnx

    path = Path(tempfile.mkdtemp()) / "model.onnx"
    export_onnx(model, path, quantize=quantize)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda audio: torch.from_numpy(session.run(["embedding"], {"audio": audio.numpy()})[0])


def runners(model, precisions, threads: int, official_dir: str | None = None) -> dict:
    out = {}
    if official_dir:
        from official import official_embed, official_model

        official = official_model(model, official_dir)

        def run_official(audio):
            with torch.inference_mode():
                return official_embed(official, audio)

        out["official fp32"] = run_official
    for precision in precisions:
        net = prepare_for_inference(model, precision, "cpu")

        def run(audio, net=net, precision=precision):
            with inference_context(precision, "cpu"):
                return net.embed(audio).float()

        out[precision] = run
    for quantize in (None, "int8"):
        onnx = onnx_runner(model, threads, quantize)
        if onnx is not None:
            out[f"onnxruntime {quantize or 'fp32'}"] = onnx
    return out


def timed_rounds(runs: dict, audio: torch.Tensor, rounds: int) -> tuple[dict, dict]:
    """Seconds per batch of each run in each round (after one warm-up each), and the warm-up outputs."""
    first = {name: fn(audio) for name, fn in runs.items()}
    times = {name: [] for name in runs}
    for _ in range(rounds):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn(audio)
            times[name].append(time.perf_counter() - start)
    return times, first


def tiny_agreement(precision: str) -> dict:
    """Top-1 agreement of the beats-tiny head with fp32 over 32 clips, with the flip margin rule's numbers."""
    model = avex_hub.build_model("esp_aves2_sl_beats_all", checkpoint=TINY)
    audio = clips(32, 10.0, seed=7)
    with inference_context("fp32", "cpu"):
        base = model.logits(audio)
        base_emb = model.embed(audio)
    net = prepare_for_inference(model, precision, "cpu")
    with inference_context(precision, "cpu"):
        logits, emb = net.logits(audio).float(), net.embed(audio).float()
    top2 = base.topk(2, dim=1).values
    changed = logits.argmax(1) != base.argmax(1)
    return {"cosine": cosine(emb, base_emb), "top1": float((~changed).float().mean()),
            "max_dlogit": float((logits - base).abs().max()),
            "flip_margin": float((top2[:, 0] - top2[:, 1])[changed].max()) if bool(changed.any()) else None}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="smaller matrices, fewer rounds (about 2-3 minutes)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds (default 6, quick 3)")
    p.add_argument("--precisions", default="fp32,bf16,int8")
    p.add_argument("--memory-batch", type=int, default=None, help="batch of the memory check (default 32, quick 2)")
    p.add_argument("--out", default=str(HERE / "SPEED.md"), help="Markdown results ('' to skip)")
    p.add_argument("--official-dir", default=None,
                   help="folder with the official avex package (see benchmarks/official.py): adds its BEATs at fp32 "
                        "to the interleaved rounds and every mode's ratio to it")
    args = p.parse_args(argv)
    rounds = args.rounds or (3 if args.quick else 6)
    threads = torch.get_num_threads()
    info = machine(torch.device("cpu"))
    print(json.dumps(info))

    n = 2048 if args.quick else 4096
    kernels = {"fp32": matmul_peak(torch.float32, n, 3), "bf16": matmul_peak(torch.bfloat16, n, 3)}
    peak = {k: max(v.values()) for k, v in kernels.items()}
    print(json.dumps({"matmul_gflops": {k: {name: round(g, 1) for name, g in v.items()} for k, v in kernels.items()},
                      "n": n}))

    torch.manual_seed(0)
    model = avex_hub.build_model("esp_aves2_sl_beats_all", pretrained=False, return_features_only=True)
    gflop = gflop_per_window(model.config)
    audio = clips(args.batch_size, 10.0)
    precisions = args.precisions.split(",")
    times, first = timed_rounds(runners(model, precisions, threads, args.official_dir), audio, rounds)
    base = times["fp32"]
    official = times.get("official fp32")
    rows = []
    for name, t in times.items():
        best = min(t)
        ratios = [b / x for b, x in zip(base, t)]
        to_official = None if official is None else [o / x for o, x in zip(official, t)]
        kind = "bf16" if "bf16" in name else "fp32"  # int8's matmuls are judged against fp32's ceiling too
        row = {"mode": name, "batch": args.batch_size, "audio_s_per_s": round(args.batch_size * 10 / best, 2),
               "gflops": round(args.batch_size * gflop / best, 1),
               "of_peak": round(args.batch_size * gflop / best / peak[kind], 3), "peak": kind,
               "x_fp32_median": round(statistics.median(ratios), 3),
               "x_fp32_range": [round(min(ratios), 3), round(max(ratios), 3)],
               "cosine_vs_fp32": round(cosine(first[name], first["fp32"]), 6),
               "max_abs_diff_vs_fp32": float((first[name].float() - first["fp32"]).abs().max())}
        if to_official is not None:
            row["x_official_median"] = round(statistics.median(to_official), 3)
            row["x_official_range"] = [round(min(to_official), 3), round(max(to_official), 3)]
        rows.append(row)
        print(json.dumps(row))
    accuracy = {prec: tiny_agreement(prec) for prec in precisions if prec != "fp32"}
    print(json.dumps({"tiny_vs_fp32": accuracy}))

    from embed_memory import MODES, measure

    mem_batch = args.memory_batch or (2 if args.quick else 32)
    memory = measure(MODES, batch=mem_batch, samples=160000, config=model.config.to_dict(), threads=threads)
    print(json.dumps({"memory_mb": {k: round(v, 1) for k, v in memory.items()}, "batch": mem_batch}))
    result = {"machine": info, "peak": peak, "kernels": kernels, "gflop_per_window": gflop, "rows": rows, "tiny": accuracy,
              "memory": memory, "memory_batch": mem_batch, "rounds": rounds}
    if args.out:
        Path(args.out).write_text(markdown(result, " ".join(sys.argv[1:])))
    return result


def markdown(r: dict, argv: str) -> str:
    m = r["machine"]
    lines = [
        "# Speed against the hardware", "",
        f"`python benchmarks/speed.py {argv}`".replace(" `", "`"), "",
        f"Machine: {m['cpu']}, {m['cores']} cores, torch threads {m['torch threads']}, torch {m['torch']}, "
        f"{m['date']}. Matmul peak (the faster kernel): fp32 {r['peak']['fp32']:.0f} GFLOP/s "
        f"({_kernels(r['kernels']['fp32'])}), bf16 {r['peak']['bf16']:.0f} GFLOP/s ({_kernels(r['kernels']['bf16'])}); "
        f"model {r['gflop_per_window']:.1f} GFLOP per 10 s window, so the ceilings are "
        f"{10 * r['peak']['fp32'] / r['gflop_per_window']:.1f} (fp32) and "
        f"{10 * r['peak']['bf16'] / r['gflop_per_window']:.1f} (bf16) audio s / s.", "",
        f"{r['rounds']} interleaved rounds; x fp32 and x official are each round's ratio (median, min..max). "
        "max abs diff: pooled embedding against our fp32.", "",
        "| mode | batch | audio s / s | GFLOP/s | of peak | x fp32 | x official fp32 | cosine vs fp32 | max abs diff |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in r["rows"]:
        lo, hi = row["x_fp32_range"]
        official = "-"
        if "x_official_median" in row:
            olo, ohi = row["x_official_range"]
            official = f"{row['x_official_median']:.2f} ({olo:.2f}..{ohi:.2f})"
        lines.append(f"| {row['mode']} | {row['batch']} | {row['audio_s_per_s']} | {row['gflops']} | "
                     f"{row['of_peak']:.0%} of {row['peak']} | {row['x_fp32_median']:.2f} ({lo:.2f}..{hi:.2f}) | "
                     f"{official} | {row['cosine_vs_fp32']:.6f} | {row['max_abs_diff_vs_fp32']:.1e} |")
    lines += ["", "beats-tiny checkpoint, 32 clips, against fp32:", "",
              "| precision | cosine | top-1 agreement | max logit change | largest fp32 top-2 margin among flips |",
              "|---|---|---|---|---|"]
    for prec, a in r["tiny"].items():
        flip = "-" if a["flip_margin"] is None else f"{a['flip_margin']:.4f}"
        lines.append(f"| {prec} | {a['cosine']:.6f} | {a['top1']:.3f} | {a['max_dlogit']:.4f} | {flip} |")
    mem = r["memory"]
    lines += ["", f"Peak memory above the resting process, batch {r['memory_batch']} x 10 s, full size: "
              f"forward {mem['forward']:.0f} MB, embed (one layer) {mem['embed_last']:.0f} MB "
              f"({mem['embed_last'] / mem['forward']:.2f}x), pooled_layers('all') {mem['pooled_all']:.0f} MB.", ""]
    return "\n".join(lines)


def _kernels(gflops: dict) -> str:
    return ", ".join(f"{name} {value:.0f}" for name, value in gflops.items())


if __name__ == "__main__":
    main()
