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
from avex_hub.embed.embeddings import Embeddings
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
    windows = Embeddings.load(next(p for p in files if p.name.startswith("beans-detection-dcase-test")))
    assert windows.labels.shape == (4 + 2, len(beans_set("dcase").labels))  # the 2 s windows of 5 s and 3 s, multi-hot
    dcase = next(s for s in first["sets"] if s["name"] == "dcase")
    assert next(s["per_seed"] for s in dcase["scores"] if s["task"] == "retrieval") == [
        retrieval_metrics(windows.embeddings, windows.labels.numpy())["roc_auc"]] * 2
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


def test_every_card_number_has_its_row_and_no_other_row_shows_one():
    """Each suite's scores, as the runner names them, land on the card's row from avex_hub.hub.card: all eleven
    card numbers appear beside ours, and no row of ours that the card lacks (mAP of the present classes only, a
    suite without a card number) shows one."""
    from avex_hub.hub.card import CARD_RESULTS
    from avex_hub.suites.protocol import PRESENT_MAP, probe_metric
    from avex_hub.suites.report import SetResult
    from avex_hub.suites.runner import SUITES

    shown = []
    for suite in SUITES.values():
        multilabel = suite.name in ("beans-detection", "birdset")  # the multi-hot suites (BEANS mAP)
        metrics = {"probe": [probe_metric(multilabel)] + ([PRESENT_MAP] if multilabel else []),
                   "retrieval": ["roc_auc"], "clustering": [] if multilabel else ["nmi"]}
        scores = {(task, metric): [0.5, 0.7] for task in suite.tasks for metric in metrics[task]}
        sets = [SetResult(suite.name, name, "ok", multilabel=multilabel, scores=dict(scores)) for name in suite.sets]
        info = {"title": suite.title, "card": suite.card, "sets": list(suite.sets), "controls": list(suite.controls),
                "data": suite.data}
        report = BenchmarkReport("m", suite.name, "d", ProbeProtocol(), sets, {suite.name: info})
        rows = report.aggregates()
        assert all(r.complete and r.ours == pytest.approx(0.6) and r.spread == pytest.approx(0.1414, abs=1e-4)
                   for r in rows)
        shown += [(suite.card, r.task, r.metric, r.card) for r in rows if r.card is not None]
        assert all(r.card is None for r in rows if r.metric.startswith("mAP (") or suite.card is None)
        table = report.to_markdown()
        assert all(f"| {r.card:.3f} | 0.600 | {0.6 - r.card:+.3f} | 0.141 | {len(r.used)} of {len(r.used)} |"
                   in table for r in rows if r.card is not None)
    expected = [(r.benchmark, r.task, r.metric, r.score) for r in CARD_RESULTS]
    # Every card row once, BEANS classification's twice (with and without the non-animal controls)
    assert sorted(set(shown)) == sorted(expected)
    assert len(shown) == len(expected) + 3


def test_the_card_numbers_are_never_typed_again_in_the_suites_or_readme():
    from pathlib import Path

    from avex_hub.hub.card import CARD_RESULTS

    root = Path(__file__).resolve().parents[1]
    files = [*sorted((root / "avex_hub" / "suites").glob("*.py")), root / "avex_hub" / "cli" / "benchmark.py",
             root / "README.md"]
    def text(f):
        # README's table "The model card's results beside ours" is the one place the numbers are shown as text;
        # tests/test_notebooks.py checks it row for row against CARD_RESULTS, so it is a checked copy, left out here.
        body = f.read_text()
        if f.name != "README.md":
            return body
        before, section = body.split("### The model card's results beside ours", 1)
        return before + section.split("\n#", 1)[1]

    typed = [(f.name, f"{r.score:.3f}") for f in files for r in CARD_RESULTS if f"{r.score:.3f}" in text(f)]
    assert typed == []  # read them from avex_hub.hub.card


def test_skipped_files_are_listed_beside_the_report_and_a_fixed_set_is_embedded_again(tmp_path, model):
    spec = beans_set("watkins")
    standin.beans_classification(tmp_path / "beans", spec.folder, spec.file, ["Walrus", "Sperm_Whale"],
                                 per_class={"train": 3, "valid": 1, "test": 2})
    gone = tmp_path / "beans" / spec.folder / "audio" / "test_1.wav"
    kept = gone.read_bytes()
    gone.unlink()
    protocol, out = ProbeProtocol(epochs=2, seeds=(0,), lrs=(0.01,)), tmp_path / "r.md"
    first = run_benchmark(model, "beans-classification", tmp_path / "beans", sets=["watkins"], protocol=protocol,
                          out=out)
    (watkins,) = first.sets
    assert watkins.status == "ok" and watkins.sizes["test"] == 3 and watkins.failures == [(str(gone),
                                                                                           "file not found")]
    failures = out.with_suffix(".failures.csv").read_text().splitlines()
    assert failures == ["path,error", f"{gone},beans-classification/watkins: file not found"]
    text = out.read_text()
    assert "1 listed files were skipped (missing or unreadable)" in text and "1 files skipped |" in text
    gone.write_bytes(kept)  # the file is back: the test split is another data set, embedded anew, and complete
    second = run_benchmark(model, "beans-classification", tmp_path / "beans", sets=["watkins"], protocol=protocol,
                           out=out)
    assert second.sets[0].sizes["test"] == 4 and second.sets[0].failures == []
    assert not out.with_suffix(".failures.csv").exists()  # no stale failures beside a clean report
    tests = sorted(p.name for p in (tmp_path / "r.md.cache").glob("*watkins-test-*.safetensors"))
    assert len(tests) == 2 and len(Embeddings.load(tmp_path / "r.md.cache" / tests[0])) + len(
        Embeddings.load(tmp_path / "r.md.cache" / tests[1])) == 3 + 4


def test_a_set_that_fails_while_embedding_gets_no_number_and_the_others_go_on(beans_root, tmp_path, monkeypatch,
                                                                              capsys):
    import avex_hub.suites.protocol as protocol_module
    from avex_hub.audio.decoding import AudioDecodeError

    real = protocol_module.extract_split

    def esc50_breaks(model, data, role, *args, **kwargs):
        if role.startswith("beans-classification-esc50-"):
            raise AudioDecodeError(f"{role}: cannot decode data/esc50/audio/test_0.wav (a stand-in for a bad file)")
        return real(model, data, role, *args, **kwargs)

    monkeypatch.setattr(protocol_module, "extract_split", esc50_breaks)
    out = tmp_path / "r.md"
    assert _run(beans_root, out, "--seeds", "0") == 3
    err = capsys.readouterr().err
    assert "beans-classification/esc50 (reasons in" in err and "Traceback" not in err
    report = BenchmarkReport.from_dict(json.loads(out.with_suffix(".json").read_text()))
    esc50 = next(s for s in report.sets if s.name == "esc50")
    assert esc50.status == "failed" and esc50.scores == {} and "cannot decode" in esc50.reason
    assert [s.status for s in report.sets if s.name != "esc50"] == ["ok", "ok"]
    accuracy = next(r for r in report.aggregates() if r.task == "probe" and r.title == "BEANS classification")
    assert accuracy.used == ("watkins",)  # esc50 adds nothing to any aggregate
    assert "- beans-classification/esc50 (failed): AudioDecodeError" in out.read_text()


def test_weights_that_cannot_be_loaded_end_in_one_line(beans_root, tmp_path, capsys):
    out = tmp_path / "r.md"
    # a --checkpoint that is not there is a usage error, as for every command that loads a model (it was 1 here)
    assert main(["benchmark", "beans", "--data", str(beans_root), "--checkpoint", str(tmp_path / "absent"),
                 "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("avex-hub: error: ") and "absent" in err
    assert not out.exists()  # nothing ran, so no report


def test_readme_shows_the_command_every_suite_and_that_no_real_data_row_exists_yet():
    from pathlib import Path

    from avex_hub.suites.runner import suite_names

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Reproducing the model card: `avex-hub benchmark`", 1)[1].split("\n## ", 1)[0]
    assert "**No real-data row of ours exists yet.**" in section
    assert "avex-hub benchmark beans --data ~/beans --out beans.md" in section
    table = section.split("| suite | data sets (default) |", 1)[1].split("\n\n", 1)[0]
    listed = [line.split("`")[1] for line in table.splitlines() if line.startswith("| `")]
    assert sorted(listed) == sorted(suite_names())  # one README row per suite (or group) the command takes
    budget = section.split("| suite | download |", 1)[1].split("\n\n", 1)[0]
    assert {name for line in budget.splitlines() if line.startswith("| `")
            for name in line.split("|")[1].replace("`", "").replace(",", " ").split()
            if name in suite_names()} == set(suite_names()) - {"beans"}  # a budget per suite (beans is a group)
    assert "estimated, not measured" in section
