"""The package's shape, read from its source with ``ast``: imports run one way, no private name crosses a module,
and the model needs no file I/O library. Every import counts, also those inside functions (a lazy import is still
a dependency). Every module of the package has a row in LAYERS.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import avex_hub
from conftest import FIXTURE

PACKAGE_DIR = Path(avex_hub.__file__).parent

# The layer of every module, lowest first: a module may import from its own layer or a lower one, never a higher
# one, and never in a cycle. A new module needs a row here (which room does it belong in?).
LAYERS = {
    "avex_hub._version": 0,
    "avex_hub._files": 0,
    "avex_hub._lazy": 0,
    "avex_hub._warnings": 0,
    "avex_hub.labels": 0,
    # where recordings and outputs live: URLs, the run's storage options, listing prefixes, ranged reads, uploads
    "avex_hub.storage": 0,  # the room itself (its modules load on first use)
    "avex_hub.storage.locations": 0,
    "avex_hub.storage.listing": 0,
    "avex_hub.storage.objects": 0,
    # audio in: arrays and channels, the high-frequency meter, resampling, quality flags, the WAV header, decoding,
    # the folder walk, collation, windows, datasets, augmentations, synthetic data
    "avex_hub.audio": 1,  # the room itself (its modules load on first use)
    "avex_hub.audio.arrays": 1,
    "avex_hub.audio.high_frequency": 1,
    "avex_hub.audio.resampling": 1,
    "avex_hub.audio.quality": 1,
    "avex_hub.audio.wav_header": 1,
    "avex_hub.audio.decoding": 1,
    "avex_hub.audio.folders": 1,
    "avex_hub.audio.collate": 1,
    "avex_hub.audio.windows": 1,
    "avex_hub.audio.batches": 1,
    "avex_hub.audio.intervals": 1,
    "avex_hub.audio.items": 1,
    "avex_hub.audio.manifest": 1,
    "avex_hub.audio.datasets": 1,
    "avex_hub.audio.augment": 1,
    "avex_hub.audio.synthetic": 1,  # the synthetic dataset: its public face
    "avex_hub.audio.synthetic.calls": 1,  # the made-up species and their calls
    "avex_hub.audio.synthetic.plan": 1,  # checked settings, which call goes in which clip
    "avex_hub.audio.synthetic.dataset": 1,  # rendering and writing the files
    # the encoder: BEATs, the filterbank, the preprocessing contract and the user-facing model
    "avex_hub.encoder": 2,  # the room itself (its modules load on first use)
    "avex_hub.encoder.fastpath": 2,
    "avex_hub.encoder.beats": 2,
    "avex_hub.encoder.fbank": 2,
    "avex_hub.encoder.preprocessing": 2,
    "avex_hub.encoder.model": 2,
    "avex_hub.encoder.precision": 2,
    "avex_hub.encoder.pipeline": 2,
    "avex_hub.encoder.recordings": 2,
    "avex_hub.encoder.onnx_graph": 2,  # the model as an ONNX graph (export and runtimes)
    "avex_hub.encoder.runtime_cache": 2,
    "avex_hub.encoder.runtimes": 2,  # onnxruntime and openvino behind AvexModel's batch methods
    # weights as data, download -> verify -> strict load, provenance
    "avex_hub.hub": 3,  # the room itself (its modules load on first use)
    "avex_hub.hub.weights": 3,
    "avex_hub.hub.card": 3,
    "avex_hub.hub.loading": 3,
    "avex_hub.hub.provenance": 3,
    "avex_hub.hub.integrity": 3,
    # embeddings out: extraction, file inference, output writers, precision modes
    "avex_hub.embed": 4,  # the room itself (its modules load on first use)
    "avex_hub.embed.embeddings": 4,
    "avex_hub.embed.clips": 4,
    "avex_hub.embed.cache": 4,
    "avex_hub.embed.extract": 4,
    "avex_hub.embed.inference": 4,
    "avex_hub.embed.outputs": 4,
    "avex_hub.embed.settings": 4,
    "avex_hub.embed.destinations": 4,  # outputs written to a path or an object store, whole or not at all
    "avex_hub.embed.split": 4,  # --shard I/N: which inputs are this machine's, and what a shard covered
    "avex_hub.embed.merge": 4,  # avex-hub merge: the outputs of sharded runs into one
    "avex_hub.embed.npz_join": 4,  # NPZ outputs joined column by column, for merge
    # heads on the embeddings: probes, training, fine-tuning helpers, evaluation, metrics
    "avex_hub.heads": 5,  # the room itself (its modules load on first use)
    "avex_hub.heads.probe_module": 5,
    "avex_hub.heads.probe_files": 5,
    "avex_hub.heads.probes": 5,
    "avex_hub.heads.targets": 5,
    "avex_hub.heads.train_options": 5,
    "avex_hub.heads.training": 5,
    "avex_hub.heads.finetune": 5,
    "avex_hub.heads.splits": 5,
    "avex_hub.heads.evaluation": 5,
    "avex_hub.heads.scoring": 5,
    "avex_hub.heads.retrieval": 5,
    "avex_hub.heads.results": 5,
    "avex_hub.heads.metrics": 5,
    # other libraries' interfaces
    "avex_hub.integrations": 6,  # the room itself (its modules load on first use)
    "avex_hub.integrations.sklearn": 6,
    "avex_hub.integrations.lightning_data": 6,
    "avex_hub.integrations.lightning": 6,
    "avex_hub.integrations.lightning_predict": 6,
    "avex_hub.integrations.onnx_export": 6,
    "avex_hub.integrations.ray_data": 6,  # --engine ray: Ray Data tasks and a model actor pool
    "avex_hub.integrations.agile": 6,  # agile modelling on perch-hoplite, by step of the loop
    "avex_hub.integrations.agile.settings": 6,
    "avex_hub.integrations.agile.schema": 6,
    "avex_hub.integrations.agile.lock": 6,
    "avex_hub.integrations.agile.store": 6,
    "avex_hub.integrations.agile.places": 6,  # recording starts and sites (schema 3), read by monitoring
    "avex_hub.integrations.agile.archive": 6,
    "avex_hub.integrations.agile.versions": 6,  # the output version of the vectors, and their upgrade
    "avex_hub.integrations.agile.model": 6,
    "avex_hub.integrations.agile.index": 6,
    "avex_hub.integrations.agile.search": 6,
    "avex_hub.integrations.agile.labels": 6,
    "avex_hub.integrations.agile.classify": 6,
    "avex_hub.integrations.agile.widget": 6,
    # monitoring outputs: above embed and heads, reading their rows (times, sites, events, calibration, presence)
    "avex_hub.monitoring": 6,  # the room itself (its modules load on first use)
    "avex_hub.monitoring.times": 6,
    "avex_hub.monitoring.deployments": 6,
    "avex_hub.monitoring.tables": 6,
    "avex_hub.monitoring.recordings": 6,
    "avex_hub.monitoring.scores": 6,
    "avex_hub.monitoring.events": 6,
    "avex_hub.monitoring.spectrogram": 6,
    "avex_hub.monitoring.review": 6,
    "avex_hub.monitoring.calibration": 6,
    "avex_hub.monitoring.presence": 6,
    "avex_hub.monitoring.species": 6,
    "avex_hub.monitoring.synthetic": 6,
    # the top: entry points, notebook helpers, the CLI, the public face, hubconf's helper (which imports the package)
    "avex_hub.entrypoints": 7,
    "avex_hub.tutorial": 7,
    # benchmark suites: the published layouts read into datasets, probes run, the card's table written
    "avex_hub.suites": 7,  # the room itself (its modules load on first use)
    "avex_hub.suites.beans_sets": 7,
    "avex_hub.suites.data": 7,
    "avex_hub.suites.detection": 7,
    "avex_hub.suites.metrics": 7,
    "avex_hub.suites.beans": 7,
    "avex_hub.suites.birdset": 7,
    "avex_hub.suites.beans_zero": 7,
    "avex_hub.suites.manifest": 7,
    "avex_hub.suites.protocol": 7,
    "avex_hub.suites.report": 7,
    "avex_hub.suites.runner": 7,
    "avex_hub.explore": 7,
    # the command line: how a command ends (exit codes, errors, stderr lines), its options, the model it loads, one
    # module per family of commands, the parser and main that runs them
    "avex_hub.cli.errors": 8,
    "avex_hub.cli.terminal": 8,
    "avex_hub.cli.options": 8,
    "avex_hub.cli.model": 8,
    "avex_hub.cli.inference": 8,  # embed, classify
    "avex_hub.cli.weights": 8,  # info, download, verify
    "avex_hub.cli.export": 8,
    "avex_hub.cli.agile": 8,  # index, search, label, train-classifier, detect, prune, export-labels, import-labels
    "avex_hub.cli.benchmark": 8,
    "avex_hub.cli.monitoring": 8,  # scores, times, events, review, calibrate, presence
    "avex_hub.cli.scale": 8,  # merge; --shard, --storage-options, --out in object storage
    "avex_hub.cli.engine": 8,  # --engine local|ray, --address
    "avex_hub.cli.app": 8,
    "avex_hub.cli": 8,  # the room's face: main, ExitCode, UsageError
    "avex_hub.cli.__main__": 8,  # python -m avex_hub.cli
    "avex_hub": 9,
    "avex_hub.__main__": 9,  # python -m avex_hub
    "avex_hub._hubconf_support": 10,
}


def _modules() -> dict[str, Path]:
    """Dotted name -> file, for every module of the package (a package's own name for its __init__.py)."""
    out = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = ("avex_hub", *path.relative_to(PACKAGE_DIR).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


MODULES = _modules()


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _imports(name: str) -> list[tuple[str, list[str], int]]:
    """(imported internal module, names taken from it, line) for every import in module ``name``."""
    package = name if _is_package(name) else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(MODULES[name].read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names if alias.name in MODULES]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = ".".join(base[: len(base) - node.level + 1])
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module or ""
            if source not in MODULES:
                continue
            for alias in node.names:  # "from . import windows" imports the module avex_hub.audio.windows
                as_module = f"{source}.{alias.name}"
                if as_module in MODULES:
                    found.append((as_module, [], node.lineno))
                else:
                    found.append((source, [alias.name], node.lineno))
    return found


def _module_aliases(name: str) -> dict[str, str]:
    """Local names bound to internal modules in ``name`` ("from . import finetune" binds finetune)."""
    package = name if _is_package(name) else name.rpartition(".")[0]
    aliases = {}
    for node in ast.walk(ast.parse(MODULES[name].read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")
            base = ".".join(base[: len(base) - node.level + 1]) if node.level else ""
            source = (f"{base}.{node.module}" if node.module else base) if node.level else (node.module or "")
            for alias in node.names:
                if f"{source}.{alias.name}" in MODULES:
                    aliases[alias.asname or alias.name] = f"{source}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in MODULES and alias.asname:
                    aliases[alias.asname] = alias.name
    return aliases


def _edges() -> dict[str, set[str]]:
    return {name: {target for target, _, _ in _imports(name) if target != name} for name in MODULES}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one member (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _room(name: str) -> str:
    """The top-level room of a module: its subpackage, or the module itself at the top level."""
    parts = name.split(".")
    return ".".join(parts[:2])


def test_every_module_has_a_layer():
    # A subpackage's __init__ that imports nothing of the package needs no row (it only names the room).
    missing = [name for name in MODULES if name not in LAYERS and (not _is_package(name) or _imports(name))]
    assert missing == [], f"add these modules to LAYERS in tests/test_architecture.py: {missing}"
    stale = sorted(set(LAYERS) - set(MODULES))
    assert stale == [], f"LAYERS names modules that do not exist: {stale}"


def test_imports_run_downward():
    upward = [f"{name} (layer {LAYERS[name]}) imports {target} (layer {LAYERS[target]}), line {line}"
              for name in MODULES if name in LAYERS
              for target, _, line in _imports(name) if target in LAYERS and LAYERS[target] > LAYERS[name]]
    assert upward == []


def test_no_import_cycles_between_modules_or_rooms():
    graph = _edges()
    assert _cycles(graph) == []
    rooms: dict[str, set[str]] = {}
    for name, targets in graph.items():
        rooms.setdefault(_room(name), set()).update(_room(t) for t in targets if _room(t) != _room(name))
    rooms.pop("avex_hub", None)  # the package's __init__ is the public face: it imports every room by design
    for targets in rooms.values():
        targets.discard("avex_hub")
    assert _cycles(rooms) == []


def test_the_cycle_finder_finds_cycles():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_private_name_crosses_a_module():
    crossing = []
    for name in MODULES:
        for target, names, line in _imports(name):
            crossing += [f"{name}:{line} imports {target}.{n}" for n in names
                         if n.startswith("_") and not (n.startswith("__") and n.endswith("__"))]
        aliases = _module_aliases(name)
        for node in ast.walk(ast.parse(MODULES[name].read_text())):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                crossing.append(f"{name}:{node.lineno} uses {aliases[node.value.id]}.{node.attr}")
    assert crossing == []


def test_the_model_runs_without_file_io_libraries():
    """Tensor-in users need neither libsndfile nor the optional extras: import, build and run the model."""
    code = ("import sys, torch; import avex_hub.encoder.model; from avex_hub import build_model; "
            f"model = build_model('esp_aves2_sl_beats_all', checkpoint={str(FIXTURE)!r}); "
            "out = model(torch.zeros(1, 4000)); "
            "print(sorted(m for m in ('soundfile', 'sklearn', 'lightning', 'pyarrow') if m in sys.modules), "
            "tuple(out.shape))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split("\n")[0] == "[] (1, 7)"
