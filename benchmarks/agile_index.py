"""Scale of the agile archive (avex_hub.integrations.agile on perch-hoplite): build, query, recall and disk for N x 768 vectors.

    python benchmarks/agile_index.py                  # 100 k and 1 M vectors (100 k alone: 41 min on 2 heavily loaded cores)
    python benchmarks/agile_index.py --quick          # 20 k vectors: 1.5-4 min
    python benchmarks/agile_index.py --sizes 100000 --queries 50 --out results.json
    python benchmarks/agile_index.py --embed-speed    # `avex-hub index` vs `avex-hub embed` on the same files

Synthetic vectors stand in for embeddings (the index does not care where they come from): 768-dim, drawn around
2,000 random centres (calls of one kind lie together, as real embeddings do), stored through the archive's own
path: ``Archive.create_or_open`` (hoplite's SQLite tables + usearch index, cosine, float16) and hoplite's
``insert_windows_batch``. Per size it reports: build time (SQLite rows + index), the database size on disk (SQLite
and the vector index separately), the query time of ``agile.search_vectors`` (the search ``avex-hub search`` runs:
hoplite's usearch HNSW index, then float32 rescoring and the window table lookup) approximate and exact, and
recall@100 of the approximate search against the exact one. Then a linear fit of bytes per vector and a
projection for 10 M vectors. The float32 rescoring runs on one torch thread; usearch uses every core to build.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def _settings(dim: int) -> dict:
    # What index_files records; the benchmark stores synthetic vectors, so the model fields are placeholders.
    return {"task": "embed", "model": "synthetic", "weights_sha256": None, "window_s": 10.0, "hop_s": 5.0,
            "channels": "mix", "precision": "fp32", "sample_rate": 16000, "layers": [12], "pooling": "mean",
            "embedding_dim": dim, "provenance": {}}


def _vectors(rng: np.random.Generator, centres: np.ndarray, count: int) -> np.ndarray:
    picks = rng.integers(len(centres), size=count)
    return (centres[picks] + 0.6 * rng.standard_normal((count, centres.shape[1]))).astype(np.float32)


def _du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def build(path: Path, size: int, dim: int, seed: int, chunk: int = 20000):
    from avex_hub.integrations import agile

    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((2000, dim)).astype(np.float32)
    archive = agile.Archive.create_or_open(path, _settings(dim))
    started = time.perf_counter()
    with archive.writing("benchmarks/agile_index.py"):  # the writer lock, and one commit at the end, as index does
        recording = archive.db.insert_recording(filename="synthetic.wav", deployment_id=1, size=0, mtime_ns=0,
                                                duration_s=size * 5.0)
        for start in range(0, size, chunk):
            n = min(chunk, size - start)
            batch = [{"recording_id": recording, "offsets": [5.0 * i, 5.0 * i + 10.0], "channel": -1, "flags": 0}
                     for i in range(start, start + n)]
            archive.db.insert_windows_batch(batch, _vectors(rng, centres, n), handle_duplicates="allow")
            print(f"  {start + n} / {size} vectors, {time.perf_counter() - started:.0f} s", flush=True)
    seconds = time.perf_counter() - started
    return seconds, _queries(dim, seed)


def _queries(dim: int, seed: int) -> np.ndarray:
    # Drawn around the same centres as the stored vectors (the centres come first from the seed's generator).
    centres = np.random.default_rng(seed).standard_normal((2000, dim)).astype(np.float32)
    return _vectors(np.random.default_rng(seed + 1), centres, 1000)


def measure(path: Path, queries: np.ndarray, count: int, top: int) -> dict:
    from avex_hub.integrations import agile

    archive = agile.Archive.open(path, readonly=True)
    out = {}
    found = {}
    for mode, exact in (("approximate", False), ("exact", True)):
        times = []
        found[mode] = []
        for q in queries[:count]:
            t = time.perf_counter()
            hits = agile.search_vectors(archive, q, top=top, exact=exact)
            times.append(time.perf_counter() - t)
            found[mode].append({h.window_id for h in hits})
        times = np.array(times[1:] if len(times) > 1 else times)  # the first query maps the index file in
        out[mode] = {"median_ms": 1e3 * float(np.median(times)), "p90_ms": 1e3 * float(np.percentile(times, 90))}
    recall = [len(a & e) / len(e) for a, e in zip(found["approximate"], found["exact"])]
    out["recall_at_%d" % top] = float(np.mean(recall))
    out["recall_min"] = float(np.min(recall))
    return out


def embed_speed(repeats: int, checkpoint: str | None) -> dict:
    """Seconds of `avex-hub embed` and `avex-hub index` on the same recordings, alternated ``repeats`` times.

    Without ``checkpoint`` a full-size model with random weights (768-dim, 12 layers: the published size) is
    written to a temporary folder; the speed of the encoder does not depend on the weights' values."""
    import torch

    from avex_hub import build_model
    from avex_hub.cli import main as cli
    from avex_hub.audio.synthetic import make_synthetic_dataset

    root = Path(tempfile.mkdtemp(prefix="agile-speed-"))
    try:
        if checkpoint is None:
            from safetensors.torch import save_file

            model = build_model("esp_aves2_naturelm_audio_v1_beats", pretrained=False)
            checkpoint = str(root / "model.safetensors")
            save_file({k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}, checkpoint)
            del model
        data = make_synthetic_dataset(root / "syn", num_species=2, individuals_per_species=1,
                                      clips_per_individual=1, num_long_recordings=4, long_recording_s=30.0)
        common = [str(data.root / "long"), "--model", "esp_aves2_naturelm_audio_v1_beats", "--checkpoint",
                  checkpoint, "--window", "10", "--hop", "5", "--no-progress"]
        times = {"embed": [], "index": []}
        torch.set_num_threads(os.cpu_count() or 1)
        for r in range(repeats):
            for name, argv in (("embed", ["embed", *common, "--out", str(root / f"e{r}.npz")]),
                               ("index", ["index", *common, "--db", str(root / f"db{r}")])):
                t = time.perf_counter()
                assert cli(argv) == 0, name
                times[name].append(time.perf_counter() - t)
                print(f"  {name}: {times[name][-1]:.1f} s", flush=True)
        out = {k: float(np.median(v)) for k, v in times.items()}
        out["index_over_embed"] = out["index"] / out["embed"]
        out["runs"] = times
        return out
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100000,1000000", help="comma list of vector counts")
    parser.add_argument("--quick", action="store_true", help="20 k vectors only")
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--top", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dir", default=None, help="where to build (default: a temporary folder, removed)")
    parser.add_argument("--out", default=None, help="also write the results as JSON here")
    parser.add_argument("--reuse", action="store_true",
                        help="with --dir: measure a database this benchmark built there before instead of rebuilding")
    parser.add_argument("--embed-speed", action="store_true",
                        help="instead: time `avex-hub index` against `avex-hub embed` on the same recordings")
    parser.add_argument("--repeats", type=int, default=2, help="--embed-speed: alternated runs of each")
    parser.add_argument("--checkpoint", default=None, help="--embed-speed: weights (default: random, full size)")
    args = parser.parse_args(argv)
    if args.embed_speed:
        result = embed_speed(args.repeats, args.checkpoint)
        print(json.dumps(result))
        if args.out:
            Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
        return 0
    import torch

    torch.set_num_threads(1)  # the queries' float32 rescoring: tiny matrices
    sizes = [20000] if args.quick else [int(s) for s in args.sizes.split(",")]
    root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="agile-bench-"))
    results = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
               "dim": args.dim, "top": args.top, "sizes": []}
    try:
        for size in sizes:
            path = root / f"db-{size}"
            if args.reuse and args.dir and (path / "build.json").is_file():
                seconds = json.loads((path / "build.json").read_text())["build_s"]
                queries = _queries(args.dim, args.seed)
                print(f"reusing {path} (built in {seconds:.0f} s)", flush=True)
            else:
                shutil.rmtree(path, ignore_errors=True)
                print(f"building {size} x {args.dim}", flush=True)
                seconds, queries = build(path, size, args.dim, args.seed)
                (path / "build.json").write_text(json.dumps({"build_s": seconds, "load": os.getloadavg()}))
            row = {"vectors": size, "build_s": seconds, "load_at_measure": os.getloadavg()[0],
                   "sqlite_bytes": _du(path) - (path / "usearch.index").stat().st_size,
                   "index_bytes": (path / "usearch.index").stat().st_size, **measure(path, queries, args.queries,
                                                                                     args.top)}
            row["bytes_per_vector"] = (row["sqlite_bytes"] + row["index_bytes"]) / size
            results["sizes"].append(row)
            print(json.dumps(row), flush=True)
            if not args.dir:
                shutil.rmtree(path, ignore_errors=True)
    finally:
        if not args.dir:
            shutil.rmtree(root, ignore_errors=True)
    big = results["sizes"][-1]
    if len(results["sizes"]) > 1:
        small = results["sizes"][0]
        per = ((big["sqlite_bytes"] + big["index_bytes"]) - (small["sqlite_bytes"] + small["index_bytes"])) / (
            big["vectors"] - small["vectors"])
    else:
        per = big["bytes_per_vector"]
    results["projection_10M"] = {"bytes_per_vector": per, "disk_gb": per * 1e7 / 1e9,
                                 "index_gb": big["index_bytes"] / big["vectors"] * 1e7 / 1e9}
    print(json.dumps(results["projection_10M"]))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
