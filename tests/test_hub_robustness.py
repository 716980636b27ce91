"""torch.hub pitfalls: spawn-started DataLoader workers, a cached repo with no network, shadowing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from conftest import REPO_ROOT

SITE_PACKAGES = str(Path(torch.__file__).resolve().parents[1])


def _checkout_copy(tmp_path: Path, name: str = "avex_checkout") -> Path:
    """The repository as torch.hub would hold it: hubconf.py and the package, nothing installed."""
    target = tmp_path / name
    target.mkdir()
    shutil.copy(REPO_ROOT / "hubconf.py", target)
    shutil.copytree(REPO_ROOT / "avex_hub", target / "avex_hub", ignore=shutil.ignore_patterns("__pycache__"))
    return target


def _run_without_install(script: str, tmp_path: Path, *args: str, env: dict | None = None):
    """Run a script with site processing off (-S): avex_hub is importable only through torch.hub."""
    path = tmp_path / "script.py"
    path.write_text(textwrap.dedent(script))
    environment = {**os.environ, "PYTHONPATH": SITE_PACKAGES, **(env or {})}
    result = subprocess.run([sys.executable, "-S", str(path), *args], capture_output=True, text=True,
                            env=environment, timeout=300, cwd=tmp_path)
    if "AVEX_HUB_IS_INSTALLED" in result.stdout:
        pytest.skip("avex_hub is installed in site-packages itself; this test needs an editable or no install")
    return result


SPAWN_SCRIPT = """
import importlib.util, sys
import torch
from torch.utils.data import DataLoader, Dataset

class Clips(Dataset):
    # Holds the hub-loaded model: each worker unpickles it, so it must import avex_hub.
    def __init__(self, model):
        self.model = model
        self.audio = torch.randn(6, 8000, generator=torch.Generator().manual_seed(0)) * 0.1

    def __len__(self):
        return len(self.audio)

    def __getitem__(self, i):
        with torch.inference_mode():
            return self.model.embed(self.audio[i : i + 1])[0]


if __name__ == "__main__":
    if importlib.util.find_spec("avex_hub") is not None:
        print("AVEX_HUB_IS_INSTALLED"); sys.exit(0)
    repo, checkpoint, method = sys.argv[1:4]
    model = torch.hub.load(repo, "esp_aves2_sl_beats_all", source="local", checkpoint=checkpoint)
    import avex_hub
    assert avex_hub.__file__.startswith(repo), avex_hub.__file__
    data = Clips(model)
    loader = DataLoader(data, batch_size=2, num_workers=2, multiprocessing_context=method)
    got = torch.cat(list(loader))
    expected = torch.stack([data[i] for i in range(len(data))])
    print("MAXDIFF", float((got - expected).abs().max()))
"""


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_hub_loaded_model_in_dataloader_workers(tmp_path, tiny_dir, method):
    checkout = _checkout_copy(tmp_path)
    result = _run_without_install(SPAWN_SCRIPT, tmp_path, str(checkout), str(tiny_dir), method)
    assert result.returncode == 0, result.stderr[-3000:]
    assert float(result.stdout.split("MAXDIFF")[1]) == 0.0


CACHE_SCRIPT = """
import sys, urllib.error
import torch, torch.hub

calls = []
def no_network(url, *args, **kwargs):
    calls.append(url)
    raise urllib.error.URLError("no network in this test")
torch.hub.urlopen = no_network  # every GitHub request torch.hub could make fails, and is counted

checkpoint = sys.argv[1]
model = torch.hub.load("earthspecies/avex:main", "esp_aves2_sl_beats_all", checkpoint=checkpoint,
                       skip_validation=True, trust_repo=True)
print("PINNED_CALLS", len(calls))
model2 = torch.hub.load("earthspecies/avex", "esp_aves2_sl_beats_all", checkpoint=checkpoint, trust_repo=True)
import avex_hub
print("FROM_CACHE", avex_hub.__file__.startswith(torch.hub.get_dir()))
print("SAME", bool(torch.equal(model(torch.zeros(1, 8000)), model2(torch.zeros(1, 8000)))))
"""


def test_cached_hub_repo_loads_with_no_network(tmp_path, tiny_dir):
    torch_home = tmp_path / "torch_home"
    hub_dir = torch_home / "hub"
    hub_dir.mkdir(parents=True)
    _checkout_copy(hub_dir, "earthspecies_avex_main")  # torch.hub's cache layout: owner_repo_ref
    (hub_dir / "trusted_list").write_text("earthspecies_avex\n")
    result = _run_without_install(CACHE_SCRIPT, tmp_path, str(tiny_dir), env={"TORCH_HOME": str(torch_home)})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "PINNED_CALLS 0" in result.stdout  # with a ref and skip_validation: no GitHub request at all
    assert "FROM_CACHE True" in result.stdout and "SAME True" in result.stdout


SHADOW_SCRIPT = """
import sys, warnings
import torch

repo, checkpoint, preimport = sys.argv[1:4]
if preimport == "yes":
    import avex_hub  # the decoy, imported before the hub load
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    torch.hub.load(repo, "esp_aves2_sl_beats_all", source="local", checkpoint=checkpoint)
mods = {name: getattr(m, "__file__", "") or "" for name, m in sys.modules.items() if name.split(".")[0] == "avex_hub"}
print("ALL_FROM_CHECKOUT", all(path.startswith(repo) for path in mods.values()))
print("WARNINGS", [w.category.__name__ for w in caught])
"""


@pytest.mark.parametrize("preimport", ["no", "yes"])
def test_a_decoy_avex_hub_cannot_shadow_the_checkout(tmp_path, tiny_dir, preimport):
    checkout = _checkout_copy(tmp_path)
    decoy = tmp_path / "decoy" / "avex_hub"
    decoy.mkdir(parents=True)
    (decoy / "__init__.py").write_text("DECOY = True\n")
    (decoy / "entrypoints.py").write_text("raise ImportError('decoy entrypoints were imported')\n")
    env = {"PYTHONPATH": os.pathsep.join([str(decoy.parent), SITE_PACKAGES])}
    result = _run_without_install(SHADOW_SCRIPT, tmp_path, str(checkout), str(tiny_dir), preimport, env=env)
    if preimport == "no":
        assert result.returncode == 0, result.stderr[-3000:]
        assert "ALL_FROM_CHECKOUT True" in result.stdout
        assert "ShadowedCheckoutWarning" not in result.stdout
    else:
        # The decoy is already in sys.modules: the load cannot silently run someone else's code.
        assert result.returncode != 0
        assert "another 'avex_hub' is already imported" in result.stderr and "fresh Python process" in result.stderr


def test_an_identical_installed_copy_is_not_reported_as_shadowing(tmp_path, tiny_dir):
    """Colab: `pip install avex-hub` and a torch.hub checkout of the same code, imported in that order."""
    installed = _checkout_copy(tmp_path, "site")
    checkout = _checkout_copy(tmp_path)
    env = {"PYTHONPATH": os.pathsep.join([str(installed), SITE_PACKAGES])}
    result = _run_without_install(SHADOW_SCRIPT, tmp_path, str(checkout), str(tiny_dir), "yes", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "WARNINGS []" in result.stdout
    older = "# an older release\n" + (checkout / "avex_hub" / "labels.py").read_text()
    (installed / "avex_hub" / "labels.py").write_text(older)
    result = _run_without_install(SHADOW_SCRIPT, tmp_path, str(checkout), str(tiny_dir), "yes", env=env)
    assert "ShadowedCheckoutWarning" in result.stdout
