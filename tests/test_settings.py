"""Typed, frozen settings (``avex_hub.embed.settings``) that store exactly what the string-keyed settings stored: the
digests below were computed by the code before the dataclasses (``inference_settings`` returned a dict, output
version 2), so outputs and ``.parts/`` shards written by earlier versions read back and are found by their names. A
change that fails here would make every existing shard be recomputed: make such a change on purpose
(``OUTPUT_VERSION``), and say so."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest

from avex_hub.embed import outputs
from avex_hub.embed.inference import inference_settings
from avex_hub.embed.settings import OUTPUT_VERSION, ClassifySettings, EmbedSettings, InferenceSettings

CASES = [
    ("embed", dict(layers=[1, -1], channels="all", hop_s=4.0, pooling="max"),
     "74d1c5702ba80159d8544830c0dc68db50581ff55c9715adf962e7015fd9a622"),
    ("classify", dict(top_k=3, window_s=5.0, channels=1, precision="int8"),
     "55f4231419db6f22e034ae5d8796f91131c6e08269641c8b2c16d0c059e11a78"),
]


@pytest.mark.parametrize("task, options, digest", CASES)
def test_stored_settings_are_the_bytes_earlier_versions_stored(tiny_model, task, options, digest):
    settings = inference_settings(tiny_model, task, **options)
    assert type(settings) is {"embed": EmbedSettings, "classify": ClassifySettings}[task]
    # what version 2 stored: the key under which avex-hub embed/classify find a shard written before the one-window
    # rule (avex_hub.embed.outputs.earlier_settings), which version 3 changes only in output_version
    assert settings.output_version == OUTPUT_VERSION == 3
    earlier = outputs.earlier_settings(settings)  # version 2 (torch only) did not name the runtime
    comparable = json.dumps({k: v for k, v in earlier.items() if k != "avex_hub_version"}, sort_keys=True)
    assert hashlib.sha256(comparable.encode()).hexdigest() == digest
    assert settings.to_json() == json.dumps(settings.to_dict(), sort_keys=True)
    assert settings.to_dict()["avex_hub_version"] == settings.avex_hub_version
    assert InferenceSettings.from_dict(json.loads(settings.to_json())) == settings  # what a reader gets back


def test_settings_are_typed_and_frozen(tiny_model):
    embed = inference_settings(tiny_model, "embed", layers="all")
    assert embed.layers == (0, 1, 2, 3) and embed.to_dict()["layers"] == [0, 1, 2, 3] and embed.task == "embed"
    with pytest.raises(dataclasses.FrozenInstanceError):
        embed.window_s = 5.0
    classify = inference_settings(tiny_model, "classify", top_k=100)
    assert classify.top_k == len(tiny_model.labels) and "layers" not in classify.to_dict()
    # an archive's own keys ride along in its JSON and are left out when read back
    stored = {**embed.to_dict(), "embedding_dim": 64, "provenance": {}}
    assert InferenceSettings.from_dict(stored) == embed
    with pytest.raises(ValueError, match=r"task 'detect'; expected 'embed' or 'classify'"):
        InferenceSettings.from_dict({**stored, "task": "detect"})
    with pytest.raises(ValueError, match=r"lack \['pooling'\]"):
        InferenceSettings.from_dict({k: v for k, v in stored.items() if k != "pooling"})


def test_a_subclass_keeps_fields_of_its_own_and_reads_back_as_itself(tiny_model):
    @dataclasses.dataclass(frozen=True)
    class Archived(EmbedSettings):  # what an archive would store: the embed settings and its own facts
        embedding_dim: int

    embed = inference_settings(tiny_model, "embed", layers=[1])
    archived = Archived(**{f.name: getattr(embed, f.name) for f in dataclasses.fields(embed)}, embedding_dim=64)
    stored = json.loads(archived.to_json())
    assert stored["embedding_dim"] == 64 and stored["task"] == "embed"
    assert Archived.from_dict(stored) == archived and InferenceSettings.from_dict(stored) == embed
    with pytest.raises(ValueError, match=r"task 'classify'; expected 'embed'"):
        EmbedSettings.from_dict(inference_settings(tiny_model, "classify").to_dict())
