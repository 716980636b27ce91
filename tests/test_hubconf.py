"""The torch.hub entry points, loaded the way users load them."""

from __future__ import annotations

import ast
import importlib
import inspect
import os
import re
import subprocess
import sys

import pytest
import torch

import avex_hub
from conftest import REPO_ROOT

ENTRY_POINTS = ["esp_aves2_sl_beats_all", "esp_aves2_sl_beats_bio", "esp_aves2_naturelm_audio_v1_beats",
                "label_map", "linear_probe", "mlp_probe", "attention_probe", "load_probe"]


def _hubconf():
    """Import hubconf.py as torch.hub does: the checkout first on sys.path."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("hubconf", REPO_ROOT / "hubconf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_hub_lists_the_entry_points():
    """What torch.hub.list shows: hubconf's public callables (its rule; the function itself reads only GitHub)."""
    module = _hubconf()
    listed = [name for name in dir(module) if callable(getattr(module, name)) and not name.startswith("_")]
    assert sorted(listed) == sorted(ENTRY_POINTS)


def test_entry_point_names_are_stated_once():
    """entrypoints.__all__ is the one list: hubconf.py and the package take it whole, every published model (a
    WEIGHTS key) is a model entry point, and neither hubconf.py nor the package's __init__ names one again."""
    from avex_hub import entrypoints
    from avex_hub.hub.weights import WEIGHTS

    assert sorted(entrypoints.__all__) == sorted(ENTRY_POINTS)
    assert set(entrypoints.__all__) <= set(avex_hub.__all__)
    assert all(getattr(avex_hub, name) is getattr(entrypoints, name) for name in ENTRY_POINTS)
    models = [name for name in entrypoints.__all__
              if "pretrained" in inspect.signature(getattr(entrypoints, name)).parameters]
    assert models == list(WEIGHTS)
    for path in (REPO_ROOT / "hubconf.py", REPO_ROOT / "avex_hub" / "__init__.py"):  # the two that listed them
        assert _spelled(path) & set(ENTRY_POINTS) == set(), path


def _spelled(path) -> set[str]:
    """Every name a module's code spells: identifiers, imported names and string constants (not comments)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Name):
            found.add(node.id)
        elif isinstance(node, ast.alias):
            found.add(node.asname or node.name)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            found.add(node.value)
    return found


def test_every_entry_point_has_a_one_line_summary():
    module = _hubconf()
    for name in ENTRY_POINTS:
        doc = getattr(module, name).__doc__
        assert doc and doc.strip().splitlines()[0].strip().endswith("."), name
        assert len(doc.strip().splitlines()[0]) <= 120, name


def test_model_builders_share_the_keyword_signature():
    for name in ENTRY_POINTS[:3]:
        params = inspect.signature(getattr(avex_hub, name)).parameters
        for keyword, default in [("pretrained", True), ("checkpoint", None), ("return_features_only", False),
                                 ("device", None), ("revision", None), ("progress", True)]:
            assert params[keyword].default == default and params[keyword].kind is inspect.Parameter.KEYWORD_ONLY


def test_hub_load_local_checkpoint_matches_reference(tiny_dir, cases):
    model = torch.hub.load(str(REPO_ROOT), "esp_aves2_sl_beats_all", source="local", checkpoint=str(tiny_dir))
    assert not model.training
    with torch.inference_mode():
        assert (model(cases["equal.audio"]) - cases["equal.logits"]).abs().max() <= 1e-4
    labels = torch.hub.load(str(REPO_ROOT), "label_map", source="local", checkpoint=str(tiny_dir))
    assert labels.names == model.labels and labels["Turdus merula"] == 1


def test_hub_dependencies_are_declared():
    import importlib.util

    declared = set(_hubconf().dependencies)
    assert {"torch", "numpy", "safetensors", "huggingface_hub", "soundfile", "soxr"} <= declared
    assert all(importlib.util.find_spec(name) is not None for name in declared)


def test_hub_load_offline_with_empty_cache_explains(tmp_path):
    """A real process with HF_HOME pointing at an empty cache and HF_HUB_OFFLINE=1."""
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    code = ("import torch\n"
            "try:\n"
            f"    torch.hub.load({str(REPO_ROOT)!r}, 'esp_aves2_sl_beats_all', source='local')\n"
            "except FileNotFoundError as e:\n"
            "    print(type(e).__name__); print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("WeightsNotAvailableError")
    assert "hf download EarthSpeciesProject/esp-aves2-sl-beats-all" in out.stdout
    assert "checkpoint=" in out.stdout


def test_same_code_compares_every_file_of_the_package(tmp_path):
    """A pip-installed copy counts as this checkout only if every module, in every subfolder, is identical."""
    import shutil

    from avex_hub._hubconf_support import _same_code

    first, second = tmp_path / "first", tmp_path / "second"
    for root in (first, second):
        shutil.copytree(REPO_ROOT / "avex_hub", root / "avex_hub", ignore=shutil.ignore_patterns("__pycache__"))
    assert _same_code(str(first), str(second))
    (first / "avex_hub" / "encoder_extra").mkdir()
    (first / "avex_hub" / "encoder_extra" / "model.py").write_text("VERSION = 1\n")
    (second / "avex_hub" / "encoder_extra").mkdir()
    (second / "avex_hub" / "encoder_extra" / "model.py").write_text("VERSION = 2\n")
    assert not _same_code(str(first), str(second))  # the flat glob saw only avex_hub/*.py and said True


def test_public_api_is_documented():
    import importlib
    import pkgutil

    undocumented = [name for name in avex_hub.__all__
                    if callable(getattr(avex_hub, name)) and not (getattr(avex_hub, name).__doc__ or "").strip()]
    assert undocumented == []
    # Every module of the package, whatever its folder (optional extras: sklearn and lightning are dev installs).
    modules = [info.name for info in pkgutil.walk_packages(avex_hub.__path__, "avex_hub.")]
    assert len(modules) >= 25
    for module in modules:
        mod = importlib.import_module(module)
        assert (mod.__doc__ or "").strip(), module
        objects = [getattr(mod, n) for n in getattr(mod, "__all__", [])]
        missing = [o for o in objects if (inspect.isfunction(o) or inspect.isclass(o)) and not (o.__doc__ or "").strip()]
        assert missing == [], (module, missing)


def _api_summary_names() -> set[str]:
    """The names of README's "API summary" table: each cell's `name`s, leaving out those in parentheses (which
    explain a name: its methods, the call that returns it)."""
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("\n## API summary\n")
    section = text[start:text.index("\n## ", start + 1)]
    names = set()
    for row in (line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| for ")):
        cell = row.split("|")[2]
        while re.search(r"\([^()]*\)", cell):
            cell = re.sub(r"\([^()]*\)", "", cell)
        names |= set(re.findall(r"`(\w+)`", cell))
    return names


def test_public_names_are_the_readme_api_summary_and_importable():
    assert len(set(avex_hub.__all__)) == len(avex_hub.__all__)
    assert sorted(_api_summary_names()) == sorted(avex_hub.__all__)
    namespace: dict = {}
    exec("from avex_hub import *", namespace)
    assert sorted(set(namespace) - {"__builtins__"}) == sorted(avex_hub.__all__)
    assert all(namespace[name] is getattr(avex_hub, name) for name in avex_hub.__all__)


INTERNAL = {"BEATsConfig": "avex_hub.encoder.beats", "EncoderOutput": "avex_hub.encoder.beats",
            "FbankConfig": "avex_hub.encoder.fbank", "KaldiFbank": "avex_hub.encoder.fbank",
            "Preprocessing": "avex_hub.encoder.preprocessing", "MIN_SAMPLES": "avex_hub.encoder.model",
            "WeightsEntry": "avex_hub.hub.weights"}


def test_internal_names_live_only_in_their_modules():
    """0.1.0 is the first release: internal names are not at the top level, not even behind a deprecation."""
    for name, module in INTERNAL.items():
        assert name not in avex_hub.__all__ and name not in dir(avex_hub), name
        assert hasattr(importlib.import_module(module), name), (name, module)
        with pytest.raises(AttributeError, match=f"module 'avex_hub' has no attribute '{name}'"):
            getattr(avex_hub, name)
    from avex_hub.hub import weights

    assert "Preprocessing" not in weights.__all__  # hub.loading imports it from encoder.preprocessing, its home


def test_import_has_no_heavy_or_global_side_effects():
    import subprocess
    import sys

    # warnings.filters is compared with a copy taken before the import (an import that adds a filter fails).
    code = ("import sys, warnings, torch; threads = torch.get_num_threads(); filters = list(warnings.filters); "
            "import avex_hub; "
            "print(sorted(m for m in ('sklearn', 'lightning', 'pyarrow', 'matplotlib') if m in sys.modules), "
            "torch.get_num_threads() == threads, warnings.filters == filters)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["[]", "True", "True"], out.stderr
