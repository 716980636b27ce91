"""Run by tests/test_ddp.py in a subprocess (not collected by pytest): a real 2-process DDP fit on CPU (gloo)
followed by a sharded 2-process ``Trainer.predict`` of long-recording windows.

    python tests/ddp_script.py DATA_ROOT OUT_DIR TINY_CHECKPOINT

Lightning's "ddp" strategy relaunches this script for rank 1. Each rank writes ``weights_rank<R>.safetensors``
(its model after training) and ``info_rank<R>.json``; rank 0 also exports the model to ``OUT_DIR/export``; the
shards and their merge go to ``OUT_DIR/shards``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def main(data_root: Path, out: Path, tiny: Path) -> None:
    started = time.perf_counter()
    import lightning as L
    import torch
    from safetensors.torch import save_file

    import avex_hub
    from avex_hub.integrations.lightning import AvexClassifier, AvexDataModule, extract_embeddings_distributed, window_dataset

    L.seed_everything(0, verbose=False)
    data = AvexDataModule.from_manifest(data_root / "manifest.csv", clip_s=1.0, batch_size=2, seed=0,
                                        splits={"train": "train", "val": "val"})
    model = avex_hub.build_model("esp_aves2_sl_beats_all", checkpoint=tiny)
    # The tiny config has layer drop 0.05: the per-step seed makes every rank drop the same layers, and DDP is told
    # that some parameters may get no gradient in a step.
    module = AvexClassifier(model, labels=data.labels, lr=2e-3, warmup_steps=1, mixup=0.5, noise=True, seed=0)
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp_find_unused_parameters_true", max_steps=4,
                        limit_val_batches=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0)
    fit_started = time.perf_counter()
    trainer.fit(module, data)
    fit_s = time.perf_counter() - fit_started
    rank = trainer.global_rank
    state = {k: v.detach().clone().contiguous() for k, v in module.model.state_dict().items()}
    save_file(state, str(out / f"weights_rank{rank}.safetensors"))
    if rank == 0:
        module.export(out / "export")

    windows = window_dataset(data_root / "long", window_s=1.0, hop_s=0.5)
    predict_started = time.perf_counter()
    merged = extract_embeddings_distributed(module.model, windows, out / "shards", batch_size=2, flush_every=3,
                                            accelerator="cpu", devices=2, strategy="ddp", enable_progress_bar=False)
    info = {"rank": rank, "world_size": trainer.world_size, "global_step": trainer.global_step,
            "backend": torch.distributed.get_backend() if torch.distributed.is_initialized() else None,
            "windows": len(windows), "fit_s": fit_s, "predict_s": time.perf_counter() - predict_started,
            "total_s": time.perf_counter() - started,
            "merged": None if merged is None else {"num_items": merged.num_items, "duplicates": merged.duplicates,
                                                   "world_size": merged.world_size, "path": str(merged.path)}}
    (out / f"info_rank{rank}.json").write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    # Lightning leaves the process group up after fit and predict; a gloo group still alive at interpreter exit
    # sometimes aborts the process there ("terminate called without an active exception", exit code 134).
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
