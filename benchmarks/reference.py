"""Load the reference BEATs implementation from a folder the user provides, with our weights in it.

The reference (``BEATs.py``, ``backbone.py`` and ``modules.py`` from the ``beats/`` folder of the
microsoft/unilm repository) is never part of this repository: pass its folder as ``--reference-dir``.
It imports ``torchaudio.compliance.kaldi`` for its filterbank. In order of preference that module is
1. an importable torchaudio, 2. ``kaldi.py`` loaded on its own from a torchaudio folder given as
``--torchaudio-dir`` (e.g. ``pip install --no-deps --target DIR torchaudio==2.11.*``: that file is pure
Python and needs no torchaudio binaries), or 3. a clearly labelled shim that answers ``fbank()`` with
avex_hub's Kaldi-compatible filterbank, so the reference's own transformer is timed on identical inputs.
All module names are registered in ``sys.modules`` only while the reference is imported.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import sys
import types
from pathlib import Path

import torch

REFERENCE_FILES = ("modules.py", "backbone.py", "BEATs.py")
HOW_TO_GET = (
    "the reference BEATs implementation is not bundled. Put BEATs.py, backbone.py and modules.py from the beats/ "
    "folder of https://github.com/microsoft/unilm into a folder and pass --reference-dir FOLDER "
    "(optionally also `pip install --no-deps --target TA_DIR 'torchaudio==2.11.*'` and --torchaudio-dir TA_DIR "
    "so that it uses torchaudio's own Kaldi filterbank)."
)


def _load_file(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _kaldi_shim() -> types.ModuleType:
    """SHIM (benchmark only): ``fbank(waveform [1, S], ...) -> [frames, mels]`` computed by avex_hub.encoder.fbank."""
    from avex_hub.encoder.fbank import FbankConfig, KaldiFbank

    module = types.ModuleType("torchaudio.compliance.kaldi")
    module.__doc__ = "avex-hub benchmark shim standing in for torchaudio.compliance.kaldi (fbank only)"
    made: dict = {}

    def fbank(waveform, num_mel_bins=23, sample_frequency=16000.0, frame_length=25.0, frame_shift=10.0, **_):
        config = FbankConfig(sample_rate=int(sample_frequency), num_mel_bins=num_mel_bins,
                             frame_length_ms=frame_length, frame_shift_ms=frame_shift)
        key = (config, str(waveform.device))
        if key not in made:
            made[key] = KaldiFbank(config).to(waveform.device)
        return made[key](waveform)[0]  # [1, samples] -> [frames, mels], as torchaudio returns

    module.fbank = fbank
    return module


@contextlib.contextmanager
def _temporary_modules(names: list[str]):
    saved = {n: sys.modules[n] for n in names if n in sys.modules}
    try:
        yield
    finally:
        for n in names:
            sys.modules.pop(n, None)
        sys.modules.update(saved)


def load_reference(reference_dir: str | Path, torchaudio_dir: str | Path | None = None):
    """The reference ``BEATs`` module object and a description of the filterbank it uses."""
    folder = Path(reference_dir)
    missing = [f for f in REFERENCE_FILES if not (folder / f).is_file()]
    if missing:
        raise FileNotFoundError(f"{folder} lacks {missing}: {HOW_TO_GET}")
    names = ["modules", "backbone", "BEATs", "torchaudio", "torchaudio.compliance", "torchaudio.compliance.kaldi"]
    with _temporary_modules(names):
        try:
            kaldi = importlib.import_module("torchaudio.compliance.kaldi")
            source = "torchaudio.compliance.kaldi (installed torchaudio)"
        except Exception:  # noqa: BLE001 - torchaudio missing or its binaries do not match this torch
            for n in names[3:]:
                sys.modules.pop(n, None)
            kaldi_py = Path(torchaudio_dir or "") / "torchaudio" / "compliance" / "kaldi.py"
            parent = types.ModuleType("torchaudio")  # kaldi.py uses the package only for mfcc's DCT
            parent.compliance = types.ModuleType("torchaudio.compliance")
            sys.modules["torchaudio"], sys.modules["torchaudio.compliance"] = parent, parent.compliance
            if torchaudio_dir is not None and kaldi_py.is_file():
                kaldi = _load_file("torchaudio.compliance.kaldi", kaldi_py)
                source = f"torchaudio's kaldi.py loaded on its own from {kaldi_py}"
            else:
                kaldi = _kaldi_shim()
                source = "SHIM: avex_hub.encoder.fbank standing in for torchaudio.compliance.kaldi (torchaudio not usable)"
            parent.compliance.kaldi = kaldi
            sys.modules["torchaudio.compliance.kaldi"] = kaldi
        _load_file("modules", folder / "modules.py")
        _load_file("backbone", folder / "backbone.py")
        beats = _load_file("BEATs", folder / "BEATs.py")
    return beats, source


def reference_model(beats_module, model) -> torch.nn.Module:
    """The reference BEATs encoder holding exactly ``model.backbone``'s weights (no AudioSet predictor)."""
    cfg = beats_module.BEATsConfig({**model.config.to_dict(), "finetuned_model": False})
    with warnings_silenced():
        reference = beats_module.BEATs(cfg)
    state = {}
    for key, value in model.backbone.state_dict().items():
        if key.startswith("predictor."):
            continue
        key = key.replace("pos_conv.0.parametrizations.weight.original0", "pos_conv.0.weight_g")
        key = key.replace("pos_conv.0.parametrizations.weight.original1", "pos_conv.0.weight_v")
        state[key] = value
    reference.load_state_dict(state, strict=True)
    return reference.eval()


@contextlib.contextmanager
def warnings_silenced():
    import warnings

    with warnings.catch_warnings():  # the reference uses the deprecated torch.nn.utils.weight_norm
        warnings.simplefilter("ignore")
        yield


def reference_embed(reference: torch.nn.Module, audio: torch.Tensor) -> torch.Tensor:
    """Mean-pooled last-layer features ``[B, C]`` of unpadded clips ``[B, S]`` (the reference's own path)."""
    features, _ = reference.extract_features(audio, padding_mask=None)
    return features.mean(dim=1)
