"""What the one-window rule costs on a folder of short clips: a recording no longer than one window runs at its own
length (the rule) against padded to the full window with a mask (the file pipelines before it), in one run.

    python benchmarks/short_clips.py                       # 24 clips of 1-9 s and 24 clips of 5 s, CPU, batch 2
    python benchmarks/short_clips.py --clips 48 --rounds 5 --batch-size 4 --device cuda

The full esp_aves2_sl_beats_all architecture with fresh weights (speed does not depend on the values) embeds the
same decoded windows both ways through the pipeline (``batch_windows`` -> ``run_batches`` with ``torch_model``);
decoding is done once, outside the timing. Padding is emulated by padding each own-length window to the window
and masking it, as the pipelines did. The two ways are timed in interleaved rounds (the best round of each is
kept, so other load on the machine hits both alike); printed as JSON: audio seconds per second of each and their
ratio, for a folder of mixed lengths (clips of different lengths cannot share a batch at their own length) and one
of equal lengths (they can).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from throughput import machine  # noqa: E402

from avex_hub.audio.batches import FileEnd, batch_windows, file_windows  # noqa: E402
from avex_hub.audio.windows import Window  # noqa: E402
from avex_hub.encoder.model import AvexModel  # noqa: E402
from avex_hub.encoder.pipeline import Embeddings, run_batches, torch_model  # noqa: E402
from avex_hub.encoder.precision import batch_size_for, resolve_device  # noqa: E402
from avex_hub.hub.weights import get_weights  # noqa: E402

RATE = 16_000


def folder(root: Path, lengths: list[float]) -> list[str]:
    """Clips of tones and noise at 16 kHz, one per length."""
    rng = np.random.default_rng(0)
    paths = []
    for i, seconds in enumerate(lengths):
        t = np.arange(round(seconds * RATE)) / RATE
        audio = 0.1 * np.sin(2 * np.pi * rng.uniform(300, 5000) * t) + 0.01 * rng.standard_normal(t.size)
        path = root / f"clip{i:03d}.wav"
        sf.write(path, audio.astype(np.float32), RATE)
        paths.append(str(path))
    return paths


def padded(window: Window, samples: int) -> Window:
    """The window as the pipelines ran it before the rule: zero padded to the full window, the padding masked."""
    extra = samples - window.audio.shape[0]
    if extra <= 0:
        return window
    return Window(audio=torch.nn.functional.pad(window.audio, (0, extra)),
                  padding_mask=torch.nn.functional.pad(window.padding_mask, (0, extra), value=True), path=window.path,
                  channel=window.channel, start_s=window.start_s, end_s=window.end_s, flags=window.flags,
                  index=window.index, file=window.file)


def timed(run, windows: list[Window], batch_size: int, device: torch.device) -> float:
    started = time.perf_counter()
    for item in run_batches(run, batch_windows(windows, batch_size)):
        assert not isinstance(item, FileEnd)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=24, help="clips per folder (default: 24)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds (default: 3)")
    parser.add_argument("--batch-size", type=int, default=None, help="windows per batch (default: the device's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    batch_size = batch_size_for(device, args.batch_size)
    torch.manual_seed(0)
    entry = get_weights("esp_aves2_sl_beats_all")
    model = AvexModel(entry.config, preprocessing=entry.preprocessing, name=entry.name).to(device)
    run = torch_model(model, Embeddings((model.num_layers,)), device=device)
    window = round(model.preprocessing.window_s * RATE)
    rng = np.random.default_rng(1)
    folders = {"mixed 1-9 s": [float(s) for s in np.round(rng.uniform(1, 9, args.clips), 2)],
               "equal 5 s": [5.0] * args.clips}
    result = {"machine": machine(device), "batch_size": batch_size, "clips": args.clips, "rounds": args.rounds}
    with tempfile.TemporaryDirectory() as tmp:
        for name, lengths in folders.items():
            root = Path(tmp) / name.replace(" ", "_")
            root.mkdir()
            own = [w for w in file_windows(folder(root, lengths)) if isinstance(w, Window)]
            ways = {"own length": own, "padded to the window": [padded(w, window) for w in own]}
            best = {way: float("inf") for way in ways}
            for way, windows in ways.items():  # warm-up
                timed(run, windows[:batch_size], batch_size, device)
            for _ in range(args.rounds):
                for way, windows in ways.items():
                    best[way] = min(best[way], timed(run, windows, batch_size, device))
            audio_s = sum(lengths)
            result[name] = {**{f"{way} (audio s / s)": round(audio_s / s, 2) for way, s in best.items()},
                            "own length / padded (speed)": round(best["padded to the window"] / best["own length"], 2),
                            "audio s": round(audio_s, 1)}
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
