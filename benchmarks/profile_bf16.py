"""Where a bf16 forward spends its time: torch (autocast, ``--precision bf16``) against OpenVINO's bf16 graph of the
same model, by kind of operation, in one process.

    python benchmarks/profile_bf16.py [--batch-size 2] [--repeats 3]

The esp-aves2 architecture with fresh weights, ``--batch-size`` 10 s windows (one masked after 7.5 s, as a file's
last window), the call ``avex-hub embed`` makes (``pooled_layers`` of the last layer). torch is profiled with
``torch.profiler`` (self CPU time per operator), OpenVINO with its performance counters (time per executed node),
each summed over ``--repeats`` forwards after a warm-up and sorted into kinds: matrix products (projections,
feed-forward, attention scores and values), softmax and attention kernels, normalisation, element-wise arithmetic
(GELU, residuals, the gated position bias), dtype conversions, convolutions, and the rest. Prints one table of
milliseconds per window and shares; Markdown with ``--out``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import defaultdict
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from avex_hub.encoder.precision import inference_context  # noqa: E402
from avex_hub.encoder.runtimes import load_runtime  # noqa: E402
from runtimes import full_size_model, load  # noqa: E402
from throughput import clips, machine  # noqa: E402

# (kind, words that mark it in a torch operator name or an OpenVINO node type), first match wins
KINDS = [
    ("dtype conversions", ("_to_copy", "aten::to", "copy_", "convert", "reorder")),
    ("attention (fused kernel, softmax)", ("scaled_dot_product", "flash_attention", "softmax", "sdpa", "mha",
                                           "scaledattn")),
    ("matrix products", ("linear", "addmm", "mm", "matmul", "fullyconnected", "bmm", "gemm")),
    ("convolutions", ("conv",)),
    ("normalisation", ("layer_norm", "layernorm", "mvn", "normalize")),
    ("element-wise", ("gelu", "add", "mul", "sub", "div", "sigmoid", "where", "masked_fill", "eltwise", "multiply",
                      "subtract", "divide", "select", "exp", "clamp", "log", "sqrt", "pow", "power", "erf")),
]


def kind_of(name: str) -> str:
    lower = name.lower()
    for kind, words in KINDS:
        if any(word in lower for word in words):
            return kind
    return "other"


def torch_profile(model, audio, mask, repeats: int) -> dict[str, float]:
    from torch.profiler import ProfilerActivity, profile

    net = load_runtime(model, "torch", "bf16")

    def run():
        with inference_context("bf16", "cpu"):
            net.pooled_layers(audio, mask, layers=[model.num_layers])

    run()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(repeats):
            run()
    out: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        out[kind_of(event.key)] += event.self_cpu_time_total / 1e3  # ms
    return dict(out)


def openvino_profile(model, audio, mask, repeats: int, threads: int) -> dict[str, float]:
    net = load_runtime(model, "openvino", "bf16", threads=threads)
    net.pooled_layers(audio, mask, layers=[model.num_layers])  # export, compile
    (session,) = net.sessions.values()
    # A second compile of the same file with the performance counters on.
    import openvino as ov

    core = ov.Core()
    graph = core.read_model(str(net.graph_file([model.num_layers])))
    compiled = core.compile_model(graph, "CPU", {"INFERENCE_PRECISION_HINT": "bf16", "INFERENCE_NUM_THREADS": threads,
                                                 "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1, "PERF_COUNT": True})
    request = compiled.create_infer_request()
    inputs = dict(zip(session.inputs, (x.numpy() for x in net.graph_inputs(audio, mask))))
    request.infer(inputs)
    out: dict[str, float] = defaultdict(float)
    for _ in range(repeats):
        request.infer(inputs)
        for node in request.get_profiling_info():
            if node.status == node.Status.EXECUTED:
                out[kind_of(node.node_type + " " + node.exec_type)] += node.real_time.total_seconds() * 1e3
    return dict(out)


def main(argv=None) -> str:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default="", help="Markdown results ('' to print only)")
    args = p.parse_args(argv)
    threads = torch.get_num_threads()
    os.environ.setdefault("AVEX_HUB_CACHE", str(Path.home() / ".cache" / "avex-hub-benchmarks"))
    model = full_size_model(1000)
    audio = clips(args.batch_size, 10.0)
    mask = torch.zeros(audio.shape, dtype=torch.bool)
    mask[-1, 120_000:] = True
    audio[mask] = 0.0
    start = load()
    profiles = {"torch bf16 (autocast)": torch_profile(model, audio, mask, args.repeats),
                "OpenVINO bf16": openvino_profile(model, audio, mask, args.repeats, threads)}
    windows = args.batch_size * args.repeats
    m = machine(torch.device("cpu"))
    lines = [f"`python benchmarks/profile_bf16.py {' '.join(sys.argv[1:] if argv is None else argv)}`", "",
             f"{m['cpu']}, {m['cores']} cores, {threads} threads, torch {m['torch']}, {m['date']}; load average "
             f"{start} at the start, {load()} at the end. Milliseconds per 10 s window (share of the total).", "",
             "| kind | " + " | ".join(profiles) + " |", "|---|" + "---|" * len(profiles)]
    kinds = [k for k, _ in KINDS] + ["other"]
    totals = {name: sum(p.values()) for name, p in profiles.items()}
    for kind in kinds + ["total"]:
        cells = []
        for name, prof in profiles.items():
            ms = totals[name] if kind == "total" else prof.get(kind, 0.0)
            cells.append(f"{ms / windows:.0f} ({ms / totals[name]:.0%})")
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return text


if __name__ == "__main__":
    main()
