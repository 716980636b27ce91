"""A real 2-process DDP fit on CPU (gloo) and a 2-process sharded prediction, run as a subprocess script
(tests/ddp_script.py) so this test process never joins a process group."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import torch

pytest.importorskip("lightning")
from safetensors.torch import load_file  # noqa: E402

import avex_hub  # noqa: E402
from avex_hub.audio.synthetic import make_synthetic_dataset  # noqa: E402

from conftest import REPO_ROOT  # noqa: E402

SCRIPT = REPO_ROOT / "tests" / "ddp_script.py"
# Variables through which a surrounding launcher (torchrun, SLURM, an outer Lightning run) would leak into ours.
_LAUNCHER_VARS = ("LOCAL_RANK", "RANK", "WORLD_SIZE", "NODE_RANK", "GROUP_RANK", "MASTER_ADDR", "MASTER_PORT",
                  "LOCAL_WORLD_SIZE", "PL_GLOBAL_SEED", "PL_TRAINER_GPUS")


def _run_script(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if k not in _LAUNCHER_VARS and not k.startswith(("SLURM_", "TORCHELASTIC_", "LSB_", "OMPI_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["OMP_NUM_THREADS"] = "1"  # two ranks on a small machine: one thread each
    # A session of its own, so a hung run is killed with its rank-1 child (which Lightning starts).
    proc = subprocess.Popen([sys.executable, str(SCRIPT), *args], cwd=REPO_ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"the 2-process DDP script did not finish in {timeout} s; output:\n{out[-4000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, "")


@pytest.mark.slow
def test_two_process_ddp_fit_and_sharded_prediction(tmp_path, tiny_dir):
    data = make_synthetic_dataset(tmp_path / "data", num_species=3, individuals_per_species=2, clips_per_individual=4,
                                  clip_s=1.0, num_long_recordings=1, long_recording_s=4.7, seed=0)
    out = tmp_path / "out"
    out.mkdir()
    result = _run_script([str(data.root), str(out), str(tiny_dir)], timeout=240)
    assert result.returncode == 0, result.stdout[-6000:]

    infos = [json.loads((out / f"info_rank{r}.json").read_text()) for r in (0, 1)]
    for rank, info in enumerate(infos):
        assert info["rank"] == rank and info["world_size"] == 2 and info["backend"] == "gloo"
        assert info["global_step"] == 4

    # Both ranks end with the same weights, and they are trained ones.
    w0, w1 = (load_file(str(out / f"weights_rank{r}.safetensors")) for r in (0, 1))
    assert w0.keys() == w1.keys()
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    start = load_file(str(tiny_dir / "model.safetensors"))
    assert not torch.equal(w0["backbone.encoder.layers.0.fc1.weight"], start["backbone.encoder.layers.0.fc1.weight"])

    # Rank 0's export rebuilds exactly that model.
    model = avex_hub.build_model("esp_aves2_sl_beats_all", checkpoint=out / "export")
    assert all(torch.equal(model.state_dict()[k], w0[k]) for k in w0)

    # Sharded prediction: 9 windows (odd, the last one padded) over 2 ranks; each rank wrote its own shard, and the
    # merge has every window exactly once, equal to a single-process pass.
    from avex_hub.integrations.lightning import window_dataset

    windows = window_dataset(data.long_recordings[0], window_s=1.0, hop_s=0.5)
    assert len(windows) == infos[0]["windows"] == 9
    ranks = [json.loads((out / "shards" / f"rank{r:05d}.json").read_text()) for r in (0, 1)]
    assert [r["rows"] for r in ranks] == [5, 4] and ranks[0]["run_id"] == ranks[1]["run_id"]
    assert infos[0]["merged"] == {"num_items": 9, "duplicates": 0, "world_size": 2,
                                  "path": str(out / "shards" / "predictions.safetensors")}
    assert infos[1]["merged"] is None
    merged = load_file(str(out / "shards" / "predictions.safetensors"))
    assert torch.equal(merged["index"], torch.arange(9))
    batch = windows.collate([windows[i] for i in range(9)])
    assert bool(batch["padding_mask"][-1].any()) and not bool(batch["padding_mask"][0].any())
    with torch.inference_mode():
        direct = model.embed(batch["audio"], batch["padding_mask"])
    assert torch.allclose(merged["embedding"], direct, atol=1e-5)
    print(f"DDP fit {infos[0]['fit_s']:.1f} s, predict {infos[0]['predict_s']:.1f} s, "
          f"script {infos[0]['total_s']:.1f} s")
