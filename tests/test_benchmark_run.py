"""``avex-hub benchmark`` end to end in ci mode: the tiny checkpoint on stand-ins of the published layouts.

The run reads the sets, embeds each split once (cached), trains the probes, and writes the card's table with the
card's numbers (read from avex_hub.hub.card) beside ours; the aggregates are checked against the per-seed numbers
the report itself holds, the retrieval numbers against the cached embeddings, and sets that cannot be read against
the rule that they get no number.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import benchmark_standins as standin
from avex_hub.cli import main
from avex_hub.embed.extract import Embeddings
from avex_hub.heads.metrics import retrieval_metrics
from avex_hub.hub.card import card_result
from avex_hub.hub.loading import sha256_file
from avex_hub.suites.beans_sets import beans_set
from avex_hub.suites.protocol import ProbeProtocol
from avex_hub.suites.report import BenchmarkReport
from avex_hub.suites.runner import run_benchmark
from conftest import FIXTURE

pytest.importorskip("sklearn")
pytest.importorskip("pyarrow")


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    yield


@pytest.fixture(scope="module")
def beans_root(tmp_path_factory):
    """A BEANS checkout with three classification sets (one a control, one without its valid file) and a detection
    set, a few clips each."""
    root = tmp_path_factory.mktemp("beans")
    watkins = beans_set("watkins")
    standin.beans_classification(root, watkins.folder, watkins.file, ["Walrus", "Sperm_Whale", "Harp_Seal"],
                                 per_class={"train": 3, "valid": 1, "test": 2}, rate=44100)
    esc50 = beans_set("esc50")
    standin.beans_classification(root, esc50.folder, esc50.file, ["0", "1"], per_class={"train": 3, "test": 2},
                                 splits=("train", "test"), seconds=1.0)
    dcase = beans_set("dcase")
    recordings = [{"name": "calls", "length": 5.0, "annotations": [{"st": 0.5, "ed": 1.5, "label": "AMRE"},
                                                                    {"st": 1.0, "ed": 3.5, "label": "AMRE"},
                                                                    {"st": 3.0, "ed": 4.0, "label": "CALL"}]},
                  {"name": "quiet", "length": 3.0, "annotations": []}]
    standin.beans_detection(root, dcase.folder, {s: recordings for s in ("train", "valid", "test")})
    return root


def _run(root, out, *extra):
    return main(["benchmark", "beans", "--data", str(root), "--sets", "watkins,esc50,dcase", "--checkpoint",
                 str(FIXTURE), "--epochs", "4", "--seeds", "0,1", "--out", str(out), "--no-progress", *extra])


def test_benchmark_beans_end_to_end_writes_the_card_table_with_our_row(beans_root, tmp_path, capsys):
    out = tmp_path / "results.md"
    assert _run(beans_root, out) == 0
    assert "scored 3 of 3 data sets" in capsys.readouterr().err
    text = out.read_text()
    report = BenchmarkReport.from_dict(json.loads(out.with_suffix(".json").read_text()))
    assert report.to_markdown() + "\n" == text  # the JSON holds everything the markdown shows
    assert [s.status for s in report.sets] == ["ok"] * 3
    assert report.model_digest == sha256_file(FIXTURE / "model.safetensors")  # which weights made these numbers
    by_name = {s.name: s for s in report.sets}
    assert by_name["esc50"].control and "no esc50.valid.csv" in by_name["esc50"].notes[0]
    assert set(by_name["dcase"].scores) == {("probe", "mAP"), ("probe", "mAP_present"), ("retrieval", "roc_auc")}
    assert all(lr in (1e-4, 1e-3, 1e-2) for s in report.sets for lr in s.lr) and len(by_name["watkins"].lr) == 2
    rows = {(r.title, r.task, r.metric): r for r in report.aggregates()}
    accuracy = rows[("BEANS classification", "probe", "accuracy")]
    animal = rows[("BEANS classification, without esc50, speech-commands", "probe", "accuracy")]
    per_seed = np.mean([by_name["watkins"].scores[("probe", "accuracy")],
                        by_name["esc50"].scores[("probe", "accuracy")]], axis=0)
    assert accuracy.ours == pytest.approx(per_seed.mean()) and accuracy.spread == pytest.approx(per_seed.std(ddof=1))
    assert animal.ours == pytest.approx(np.mean(by_name["watkins"].scores[("probe", "accuracy")]))
    assert accuracy.card == card_result("beans_classification", "probe").score  # the card's number, from its home
    assert accuracy.used == ("watkins", "esc50") and not accuracy.complete
    detection = rows[("BEANS detection", "probe", "mAP")]
    assert detection.card == card_result("beans_detection", "probe").score
    assert rows[("BEANS detection", "probe", "mAP (classes with a positive only)")].card is None
    line = next(line for line in text.splitlines() if line.startswith("| BEANS classification | probe |"))
    assert f"| {accuracy.card:.3f} | {accuracy.ours:.3f} | {accuracy.ours - accuracy.card:+.3f} |" in line
    assert "2 of 7 (not comparable with the card)" in line
    assert "offline training on cached embeddings is the same only without augmentation" in text


def test_benchmark_embeds_once_and_its_retrieval_numbers_come_from_the_cached_embeddings(beans_root, tmp_path):
    out = tmp_path / "r.md"
    assert _run(beans_root, out) == 0
    cache = out.parent / "r.md.cache"
    files = {p: p.stat().st_mtime_ns for p in cache.glob("*.safetensors")}
    assert len(files) == 9  # 3 sets x train, val, test: nothing else was embedded
    first = json.loads(out.with_suffix(".json").read_text())
    assert _run(beans_root, out, "--lrs", "0.01", "--seeds", "5") == 0  # another protocol: no new embedding
    assert {p: p.stat().st_mtime_ns for p in cache.glob("*.safetensors")} == files
    test = Embeddings.load(next(p for p in files if p.name.startswith("beans-classification-watkins-test")))
    expected = retrieval_metrics(test.embeddings, test.labels.numpy())["roc_auc"]
    watkins = next(s for s in first["sets"] if s["name"] == "watkins")
    assert next(s["per_seed"] for s in watkins["scores"] if s["task"] == "retrieval") == [expected, expected]
    again = json.loads(out.with_suffix(".json").read_text())
    assert next(s for s in again["sets"] if s["name"] == "watkins")["lr"] == [0.01]


def test_sets_that_cannot_be_read_get_no_number(beans_root, tmp_path, capsys):
    out = tmp_path / "partial.md"
    code = main(["benchmark", "beans-detection", "--data", str(beans_root), "--sets", "dcase,rfcx", "--checkpoint",
                 str(FIXTURE), "--epochs", "2", "--seeds", "0", "--out", str(out), "--no-progress"])
    assert code == 3
    err = capsys.readouterr().err
    assert "1 sets could not be read or failed: beans-detection/rfcx" in err and "Traceback" not in err
    report = json.loads(out.with_suffix(".json").read_text())
    rfcx = next(s for s in report["sets"] if s["name"] == "rfcx")
    assert rfcx["status"] == "not run" and rfcx["scores"] == [] and "rfcx/train.jsonl" in rfcx["reason"]
    assert "Kaggle" in rfcx["reason"]
    assert all(a["used"] == ["dcase"] and not a["complete"] for a in report["aggregates"])
    assert "- beans-detection/rfcx (not run): FileNotFoundError" in out.read_text()

    nothing = tmp_path / "nothing.md"
    assert main(["benchmark", "birdset", "--data", str(tmp_path / "absent"), "--checkpoint", str(FIXTURE),
                 "--out", str(nothing), "--no-progress"]) == 1
    assert "no data set could be read" in capsys.readouterr().err
    report = json.loads(nothing.with_suffix(".json").read_text())
    assert report["aggregates"] == [] and {s["status"] for s in report["sets"]} == {"not run"}
    assert "**No data set could be read, so this run has no number of ours.**" in nothing.read_text()
    assert "- birdset: a folder with BirdSet's HSN/, POW/" in nothing.read_text()
    assert "| BirdSet" not in nothing.read_text()


def test_usage_errors_and_the_plan(beans_root, tmp_path, capsys):
    base = ["--data", str(beans_root), "--checkpoint", str(FIXTURE), "--out", str(tmp_path / "x.md"), "--no-progress"]
    assert main(["benchmark", "beans", "--sets", "watkins,owls", *base]) == 2
    assert "no sets ['owls']" in capsys.readouterr().err
    assert main(["benchmark", "nosuch", *base]) == 2
    assert main(["benchmark", "beans", "--seeds", "", *base]) == 2
    assert main(["benchmark", "beans", "--layers", "9", "--sets", "watkins", *base]) == 2
    assert "out of range" in capsys.readouterr().err
    assert main(["benchmark", "beans", "--layers", "3,-1", "--sets", "watkins", *base]) == 2  # layer 3 twice
    assert "give each layer once" in capsys.readouterr().err
    assert main(["benchmark", "beans", "--seed", "1", *base]) == 2  # an option is its full name
    assert "unrecognized arguments: --seed" in capsys.readouterr().err
    (tmp_path / "a-file").write_text("")
    assert main(["benchmark", "beans", *base[:-3], "--out", str(tmp_path / "a-file" / "r.md"), "--no-progress"]) == 2
    assert capsys.readouterr().err.count("\n") == 1  # one line, no traceback
    plan = tmp_path / "plan.md"
    assert main(["benchmark", "beans", "--sets", "watkins,dcase", "--plan", *base[:-3], "--out", str(plan)]) == 0
    report = json.loads(plan.with_suffix(".json").read_text())
    watkins = next(s for s in report["sets"] if s["name"] == "watkins")
    assert watkins["status"] == "planned" and watkins["sizes"] == {"train": 9, "val": 3, "test": 6}
    assert watkins["audio_s"] == 18 * 3.0 and watkins["scores"] == []  # every clip at BEANS's 3 s
    assert not (tmp_path / "plan.md.cache").exists() or not any((tmp_path / "plan.md.cache").iterdir())
    assert "| beans-classification | watkins | planned | 9 / 3 / 6 | 0.01 |" in plan.read_text()


def test_library_call_on_manifest_and_birdset_suites(tmp_path, model):
    from test_benchmark_readers import _hsn, _manifest

    rows = [(s, label, split, ",") for s in ("pipit", "killer_whale") for label in "12"
            for split in ("train", "train", "train", "val", "test", "test")]
    _manifest(tmp_path, rows)
    protocol = ProbeProtocol(epochs=3, seeds=(0,), lrs=(1e-12, 0.05), layers=(1, 2))
    ids = run_benchmark(model, "individual-id", tmp_path, protocol=protocol, sets=["pipit"])
    pipit = ids.sets[0]
    assert pipit.status == "ok" and set(pipit.scores) == {("probe", "accuracy"), ("retrieval", "roc_auc")}
    assert pipit.lr == [0.05]  # a rate of 1e-12 leaves the probe as initialised: the other wins on validation
    repertoire = run_benchmark(model, "vocal-repertoire", tmp_path, protocol=protocol)
    whale = next(s for s in repertoire.sets if s.name == "killer_whale")
    assert set(whale.scores) == {("retrieval", "roc_auc"), ("clustering", "nmi")} and whale.lr == []
    assert {s.name: s.status for s in repertoire.sets if s.name != "killer_whale"} == {
        "zebra_finch": "not run", "giant_otters": "not run", "bengalese_finch": "not run"}
    _hsn(tmp_path / "birdset")
    birds = run_benchmark(model, "birdset", tmp_path / "birdset", protocol=protocol, sets=["HSN"])
    hsn = birds.sets[0]
    assert hsn.status == "ok" and hsn.sizes == {"train": 4, "val": 1, "test": 3}
    assert 0 <= hsn.scores[("probe", "mAP")][0] <= 1
    row = next(r for r in birds.aggregates() if r.task == "probe" and r.metric == "mAP")
    assert row.card == card_result("birdset", "probe").score and row.used == ("HSN",)
    assert row.expected == ("POW", "PER", "NES", "NBP", "HSN")
    # No two test segments share a species: retrieval is undefined, says so, and makes no aggregate number
    assert math.isnan(hsn.scores[("retrieval", "roc_auc")][0])
    assert any("no query has both a positive and a negative" in note for note in hsn.notes)
    retrieval = next(r for r in birds.aggregates() if r.task == "retrieval")
    assert retrieval.used == () and math.isnan(retrieval.ours) and retrieval.difference is None
    birds.write(tmp_path / "birds.md")  # strict JSON: the undefined score is null, and reads back as nan
    saved = json.loads((tmp_path / "birds.json").read_text())
    assert next(s["per_seed"] for s in saved["sets"][0]["scores"] if s["task"] == "retrieval") == [None]
    assert math.isnan(BenchmarkReport.from_dict(saved).sets[0].scores[("retrieval", "roc_auc")][0])
    assert "| BirdSet (dedicated train) | retrieval | ROC AUC | 0.732 | n/a | - | n/a | 0 of 5" in birds.to_markdown()


def test_an_interrupted_run_resumes_from_the_embeddings_it_cached(beans_root, tmp_path, monkeypatch, capsys):
    import avex_hub.suites.protocol as protocol_module

    calls, real = [], protocol_module.extract_split

    def stop_at_the_second_set(*args, **kwargs):
        calls.append(args[2])
        if len(calls) == 4:  # watkins' train, val and test are cached; then Ctrl-C
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(protocol_module, "extract_split", stop_at_the_second_set)
    out = tmp_path / "r.md"
    assert _run(beans_root, out) == 130
    assert "interrupted" in capsys.readouterr().err and not out.exists()  # no report of a half run
    cached = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "r.md.cache").glob("*.safetensors")}
    assert sorted(name.split("-")[3] for name in cached) == ["test", "train", "val"]  # watkins' three splits
    assert all(name.startswith("beans-classification-watkins-") for name in cached)
    monkeypatch.setattr(protocol_module, "extract_split", real)
    assert _run(beans_root, out) == 0
    after = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "r.md.cache").glob("*.safetensors")}
    assert len(after) == 9 and all(after[name] == mtime for name, mtime in cached.items())  # not embedded again


def test_beans_zero_suite_runs_on_local_shards(tmp_path, model):
    rows = [{"id": f"h{i}", "dataset_name": "humbugdb", "label": ["an dirus", "ae aegypti"][i % 2], "rate": 8000,
             "seconds": 1.0, "pitch": 300.0 + 500 * (i % 2)} for i in range(10)]
    standin.beans_zero_shard(tmp_path / "shards" / "shard-0.parquet", rows)
    report = run_benchmark(model, "beans-zero", tmp_path / "shards", sets=["humbugdb"], cache=tmp_path / "cache",
                           protocol=ProbeProtocol(epochs=2, seeds=(0,), lrs=(0.01,)))
    (result,) = report.sets
    assert result.status == "ok" and result.sizes == {"train": 6, "val": 2, "test": 2}
    assert set(result.scores) == {("probe", "accuracy"), ("retrieval", "roc_auc"), ("clustering", "nmi")}
    assert all(row.card is None for row in report.aggregates())  # the card has no BEANS-Zero number
    assert (tmp_path / "cache" / "beans-zero" / "humbugdb" / "manifest.csv").is_file()  # the clips, written once
