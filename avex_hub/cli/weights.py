"""``avex-hub info|download|verify``: the published weights, their sizes and label counts, the cache.

    avex-hub info                                           # models, sizes, label counts, cache state
    avex-hub download esp_aves2_sl_beats_all                # pre-fetch and verify for offline use
    avex-hub verify                                         # re-hash the cache against the pinned digests

Exit codes: 0 ok; 1 weights unavailable, or a cached file that does not match its published digest; 2 usage (an
unknown model name).
"""

from __future__ import annotations

import json
from pathlib import Path

from . import terminal
from .errors import ExitCode, UsageError

__all__ = ["COMMANDS", "add_parsers", "run"]

COMMANDS = ("info", "download", "verify")


def add_parsers(sub) -> None:
    """Register info, download and verify on ``sub`` (the CLI's subparsers)."""
    info = sub.add_parser("info", help="models, sizes, label counts and cache state")
    info.add_argument("--json", action="store_true", help="machine-readable output")
    download = sub.add_parser("download", help="fetch and verify weights for offline use")
    download.add_argument("models", nargs="*", metavar="MODEL", help="model names (default: all)")
    verify = sub.add_parser("verify", help="re-hash cached weights against the pinned SHA-256 digests")
    verify.add_argument("models", nargs="*", metavar="MODEL", help="model names (default: all)")


def run(args) -> int:
    """Run info, download or verify."""
    return {"info": _info, "download": _download, "verify": _verify}[args.command](args)


def _entries(names: list[str]):
    from ..hub.weights import WEIGHTS, get_weights

    try:
        return [get_weights(n) for n in names] if names else list(WEIGHTS.values())
    except ValueError as error:
        raise UsageError(str(error)) from None


def _cached_copies(entry, filename: str) -> list[tuple[str, Path]]:
    """``(revision, path)`` of every cached copy of a repo file, all snapshots, via huggingface_hub's scanner."""
    from huggingface_hub import constants, scan_cache_dir

    cache = Path(constants.HF_HUB_CACHE)
    if not cache.is_dir():
        return []
    copies = []
    for repo in scan_cache_dir(cache).repos:
        if repo.repo_id == entry.repo_id and repo.repo_type == "model":
            for revision in sorted(repo.revisions, key=lambda r: r.commit_hash):
                copies += [(revision.commit_hash, f.file_path) for f in revision.files if f.file_name == filename]
    return copies


def _encoder_parameters(config) -> int:
    import torch

    from ..encoder.beats import BEATs

    with torch.device("meta"):  # sizes without allocating weights
        encoder = BEATs(config)
    return sum(p.numel() for name, p in encoder.named_parameters() if not name.startswith("predictor."))


def _info(args) -> int:
    from huggingface_hub import constants

    rows = []
    for entry in _entries([]):
        weights = _cached_copies(entry, entry.filename)
        labels, label_map = None, None
        if entry.label_map_filename:
            cached = _cached_copies(entry, entry.label_map_filename)
            if cached:
                labels, label_map = _label_map_status(entry, cached[-1][1])
        rows.append({"name": entry.name, "repo_id": entry.repo_id, "label_map": label_map,
                     "encoder_parameters": _encoder_parameters(entry.config),
                     "embedding_dim": entry.config.encoder_embed_dim, "layers": entry.config.encoder_layers,
                     "species_head": entry.has_classifier, "labels": labels, "licence": entry.licence,
                     "sha256": entry.sha256, "cached": [str(p) for _, p in weights],
                     "cached_bytes": sum(p.stat().st_size for _, p in weights if p.exists()),
                     "description": entry.description})
    offline = bool(constants.HF_HUB_OFFLINE)
    if args.json:
        print(json.dumps({"cache_dir": str(constants.HF_HUB_CACHE), "offline": offline, "models": rows}, indent=1))
        return ExitCode.OK
    print(f"Hub cache: {constants.HF_HUB_CACHE}{' (HF_HUB_OFFLINE: no downloads)' if offline else ''}")
    print(f"{'model':<36} {'params':>8} {'dim':>4} {'layers':>6} {'labels':>8}  weights")
    for r in rows:
        labels = ("-" if not r["species_head"] else "?" if r["labels"] is None
                  else str(r["labels"]))
        state = (f"cached, {r['cached_bytes'] / 1e6:.0f} MB (`avex-hub verify` re-hashes)" if r["cached"]
                 else "not cached (`avex-hub download " + r["name"] + "`)")
        print(f"{r['name']:<36} {r['encoder_parameters'] / 1e6:>7.1f}M {r['embedding_dim']:>4} {r['layers']:>6} "
              f"{labels:>8}  {state}")
    for r in rows:
        if r["label_map"] is not None and r["label_map"]["status"] != "ok":
            print(f"{r['name']}: label map {r['label_map']['status']}: {r['label_map']['detail']}")
    print("labels: species in the head ('?' = label map not cached or refused, '-' = encoder only); licence of the "
          "weights: " + ", ".join(sorted({r["licence"] for r in rows})))
    return ExitCode.OK


def _label_map_status(entry, path: Path) -> tuple[int | None, dict]:
    """(number of labels or None, {"path", "status": ok | unchecked | refused, "detail"}) of a cached label map."""
    from ..hub.loading import verify_label_map
    from ..labels import LabelMap

    try:
        address = verify_label_map(path, entry)
        labels = len(LabelMap.from_json(path))
    except (OSError, ValueError) as error:  # ChecksumError is a ValueError
        return None, {"path": str(path), "status": "refused",
                      "detail": f"{error}; delete it and run `avex-hub download {entry.name}`"}
    if address is None and entry.label_map_sha256 is None:
        return labels, {"path": str(path), "status": "unchecked",
                        "detail": "a plain file without a Hub content address, and no pinned digest"}
    how = f"content address {address}" if address else f"pinned SHA-256 {entry.label_map_sha256}"
    return labels, {"path": str(path), "status": "ok", "detail": how}


def _download(args) -> int:
    from ..hub.loading import ChecksumError, WeightsNotAvailableError, download_weights

    status = ExitCode.OK
    for entry in _entries(args.models):
        try:
            files = download_weights(entry.name, progress=True)
        except (WeightsNotAvailableError, ChecksumError) as error:
            terminal.error(str(error))
            status = ExitCode.ERROR
            continue
        print(f"{entry.name}: {files['weights']} (SHA-256 verified)")
        if "label_map" in files:
            print(f"{entry.name}: {files['label_map']}")
    return status


def _verify(args) -> int:
    from ..hub.loading import sha256_file

    status, checked = ExitCode.OK, 0
    for entry in _entries(args.models):
        copies = _cached_copies(entry, entry.filename)
        if not copies:
            print(f"{entry.name}: not cached")
        for revision, path in copies:
            found = sha256_file(path, reread=True)
            checked += 1
            if found == entry.sha256:
                print(f"{entry.name}: OK {path}")
            else:
                status = ExitCode.ERROR
                print(f"{entry.name}: MISMATCH {path} (revision {revision[:12]})\n  expected {entry.sha256}\n"
                      f"  found    {found}\n  delete it and run `avex-hub download {entry.name}` again")
        for revision, path in _cached_copies(entry, entry.label_map_filename) if entry.label_map_filename else []:
            checked += 1
            _, result = _label_map_status(entry, path)
            if result["status"] == "refused":
                status = ExitCode.ERROR
                print(f"{entry.name}: MISMATCH label map (revision {revision[:12]}): {result['detail']}")
            else:
                print(f"{entry.name}: {'OK' if result['status'] == 'ok' else 'UNCHECKED'} {path} ({result['detail']})")
    if status != ExitCode.OK:
        terminal.error("some cached weights or label maps do not match their published digests")
    elif not checked:
        print("nothing cached to verify")
    return status
