"""Memory observed during real runs: embed with one layer keeps only that layer's hidden state."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from embed_memory import measure  # noqa: E402

from avex_hub.encoder.beats import BEATsConfig  # noqa: E402


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="peak RSS reset needs Linux /proc")
def test_embed_one_layer_peaks_like_the_forward_pass():
    """A deep, narrow encoder on short clips, where 49 kept hidden states outweigh the filterbank's peak.

    Measured (2-core AMD EPYC, torch 2.13 CPU): forward 28 MB, embed(layer=-1) 28 MB (91 MB in this shape before
    only requested layers were kept), pooled_layers("all") 45 MB.
    """
    config = {**BEATsConfig().to_dict(), "encoder_layers": 48, "encoder_embed_dim": 128, "encoder_ffn_embed_dim": 128,
              "encoder_attention_heads": 2, "embed_dim": 128}
    batch, samples, tokens = 32, 16000, 48  # 1 s: 98 frames -> 6 patch rows x 8
    peak = measure(batch=batch, samples=samples, config=config)
    hidden_mb = 49 * batch * tokens * 128 * 4 / 1e6  # every layer's [B, N, C] float32
    assert peak["pooled_all"] >= peak["forward"] + 0.3 * hidden_mb  # the measurement does see kept states
    assert peak["embed_last"] <= 1.10 * peak["forward"]


def test_only_requested_hidden_states_are_kept(tiny_model):
    audio = torch.randn(2, 16000, generator=torch.Generator().manual_seed(0)) * 0.1
    with torch.inference_mode():
        full = tiny_model.encode(audio, output_hidden_states=True).hidden_states
        some = tiny_model.encode(audio, output_hidden_states=True, hidden_layers=[0, 2]).hidden_states
    assert len(some) == len(full) == tiny_model.num_layers + 1
    assert [s is None for s in some] == [False, True, False, True]
    assert torch.equal(some[0], full[0]) and torch.equal(some[2], full[2])
