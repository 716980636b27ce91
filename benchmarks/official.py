"""The official library's BEATs (the ``avex`` package on PyPI), loaded from a folder, with our weights in it.

avex is never a dependency of this project. To compare against it, install it and the one library its BEATs
module needs (pydantic, for its config class) into a scratch folder, without dependencies::

    pip install --no-deps --target /tmp/avex-official avex==1.4.0 pydantic pydantic-core annotated-types typing-inspection

and pass ``--official-dir /tmp/avex-official``. Only ``avex/models/beats/`` is imported (under a private package
name, so the rest of avex and its dependencies are never loaded); the folder is on ``sys.path`` only while it is.
Our model's weights are copied into the official model (the parameter names are the same; its filterbank buffers
are its own), and :func:`official_embed` returns the mean-pooled last layer, the same thing ``model.embed``
returns, so that both are timed on the same numbers and compared to 1e-4.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import types
from pathlib import Path

import torch

PACKAGE = "_avex_official_beats"
HOW_TO_GET = ("pass --official-dir DIR after `pip install --no-deps --target DIR avex==1.4.0 pydantic pydantic-core "
              "annotated-types typing-inspection` (avex is never a dependency of this project)")


@contextlib.contextmanager
def _on_path(folder: Path):
    sys.path.insert(0, str(folder))
    try:
        yield
    finally:
        sys.path.remove(str(folder))


def load_official_module(official_dir: str | Path) -> types.ModuleType:
    """avex's ``models/beats/beats.py`` as a module of a private package (its relative imports resolve there)."""
    root = Path(official_dir)
    folder = root / "avex" / "models" / "beats"
    if not (folder / "beats.py").is_file():
        raise FileNotFoundError(f"no avex BEATs at {folder}: {HOW_TO_GET}")
    if PACKAGE not in sys.modules:
        package = types.ModuleType(PACKAGE)
        package.__path__ = [str(folder)]
        sys.modules[PACKAGE] = package
    with _on_path(root):
        return importlib.import_module(f"{PACKAGE}.beats")


def official_model(model, official_dir: str | Path) -> torch.nn.Module:
    """The official BEATs with ``model``'s architecture and weights, in eval mode."""
    module = load_official_module(official_dir)
    ours = model.backbone
    fields = set(module.BEATsConfig.model_fields)
    values = {k: v for k, v in ours.config.to_dict().items() if k in fields}
    values.update(finetuned_model=False)  # the encoder only: both sides return frame features
    values.update(sample_frequency=float(model.sample_rate))
    official = module.BEATs(module.BEATsConfig(**values)).eval()
    state = {k: v for k, v in ours.state_dict().items() if not k.startswith("predictor.")}
    missing, unexpected = official.load_state_dict(state, strict=False)
    own = {k for k in official.state_dict() if k.startswith("fbank.")}  # its filterbank's buffers, built by it
    if set(missing) - own or unexpected:
        raise RuntimeError(f"weights do not map onto the official BEATs: missing {sorted(set(missing) - own)}, "
                           f"unexpected {sorted(unexpected)}")
    return official


def official_embed(official: torch.nn.Module, audio: torch.Tensor) -> torch.Tensor:
    """Mean over frames of the official model's last layer for ``[B, samples]`` audio at 16 kHz."""
    features, _ = official.extract_features(audio, feature_only=True, disable_layerdrop=True)
    return features.mean(dim=1)
