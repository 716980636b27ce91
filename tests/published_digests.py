"""SHA-256 of five tensors of each published file after loading into our model, and the helper that computes them.

A digest is over the raw float32 bytes, ``tensor.contiguous().numpy().tobytes()`` (C order, native little-endian).
The names are the official library's (avex 1.4.0); ``OURS`` maps them onto this package's state-dict keys.
"""

from __future__ import annotations

import hashlib

import torch

# official name -> ours (the published layout keeps the official names, so the map is the identity for these five)
OURS = {
    "backbone.encoder.layers.0.fc1.weight": "backbone.encoder.layers.0.fc1.weight",
    "backbone.encoder.layers.0.fc2.weight": "backbone.encoder.layers.0.fc2.weight",
    "backbone.encoder.layers.0.self_attn.q_proj.weight": "backbone.encoder.layers.0.self_attn.q_proj.weight",
    "backbone.patch_embedding.weight": "backbone.patch_embedding.weight",
    "backbone.post_extract_proj.weight": "backbone.post_extract_proj.weight",
}

_FC1, _FC2, _Q = (f"backbone.encoder.layers.0.{k}.weight" for k in ("fc1", "fc2", "self_attn.q_proj"))
_PATCH, _PROJ = "backbone.patch_embedding.weight", "backbone.post_extract_proj.weight"

TENSOR_SHA256 = {
    "esp_aves2_sl_beats_all": {
        _FC1: "1a899cf8975d60f6afc0ccae289653318a3e991e24ffc7de389ec20e2988e1d7",
        _FC2: "d26ed6a7bba5bb98cdbc8cb6d54df8894d7c88cd83e7c993989d0b5a3e12c1dd",
        _Q: "a6f9f52f5bf7c11281fad635248e02ff37e2939aef44c9750bd4203f9704dde0",
        _PATCH: "d7eafeb6cbe9fc6a2ec1e645792eb28a3684f682a4278513f893b282c675207b",
        _PROJ: "16cbb842a09000c467368ceebee6aca5117408f594e9fa10ffaf04cedf373a18",
    },
    "esp_aves2_sl_beats_bio": {
        _FC1: "a9560f3f459095250d47da0b36e061e38851179cfaffa7716889d34b6bbb735d",
        _FC2: "b34c27baf7ba93cab9fba3fa13121b3d50e0ff139fef093fda0f3ca7a9161210",
        _Q: "50ec5ea3d61ee9c201de316dfeed46deb2159d9521e83304913d43859c1b026c",
        _PATCH: "4a08d3831392d353360d340bfb740138ce2b22e9c18f874d0480b78203a46c82",
        _PROJ: "01977964930d69a346615701999c3a3f927d927f9ad930b3865a7460d8fb3b19",
    },
    "esp_aves2_naturelm_audio_v1_beats": {
        _FC1: "2c56923bef16a6191c10f91032a77d31b928f37e8df343c5c283f0d3dff27b2b",
        _FC2: "f3b696f0ee3e1676e1fcbe7935f76afd88066caecacc4ec3f46d193d188b5750",
        _Q: "6f0cab5bc18e46c5f98d414e7e8f0d30d1f2a4263b881e1dd9aa1362dd3db5cd",
        _PATCH: "5b4b436b139fdf27db13104ceea7df3eee4d82b61578838db420119403207f34",
        _PROJ: "b8728cd4e9408c1790c1c534347b5714603f32219183acb5d57e5f62b3c03ec3",
    },
}


def tensor_sha256(tensor: torch.Tensor) -> str:
    """SHA-256 of a float32 tensor's raw bytes in C order (refuses other dtypes rather than converting)."""
    if tensor.dtype != torch.float32:
        raise TypeError(f"expected a float32 tensor, got {tensor.dtype}")
    return hashlib.sha256(tensor.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


def model_tensor_digests(model: torch.nn.Module, official_names) -> dict[str, str]:
    """``{official name: digest}`` of the named tensors of a loaded model, looked up through ``OURS``."""
    state = model.state_dict()
    return {name: tensor_sha256(state[OURS[name]]) for name in official_names}
