"""Label maps as read from files: a name given twice or a blank name is refused, naming the file and the key."""

from __future__ import annotations

import json
import re

import pytest

import avex_hub
from avex_hub import LabelMap, build_model


def _names(tiny_dir) -> list[str]:
    return list(LabelMap.from_json(tiny_dir / "label_map.json").names)


def test_a_name_given_twice_is_refused_where_label_maps_are_read(tiny_copy, tiny_dir):
    """JSON keeps the last of repeated keys: this file loaded as a valid map with the first two names swapped."""
    names = _names(tiny_dir)
    pairs = [f'"{names[0]}": 1', f'"{names[1]}": 0'] + [f'"{n}": {i}' for i, n in enumerate(names)]
    path = tiny_copy / "label_map.json"
    path.write_text("{" + ", ".join(pairs) + "}", encoding="utf-8")
    assert list(json.loads(path.read_text())) == names  # what a plain json.loads would have taken
    expected = re.escape(f"{path}: the key '{names[0]}' is given more than once")
    for read in (lambda: LabelMap.from_json(path), lambda: avex_hub.label_map(checkpoint=tiny_copy),
                 lambda: build_model("esp_aves2_sl_beats_all", checkpoint=tiny_copy)):
        with pytest.raises(ValueError, match=expected):
            read()


@pytest.mark.parametrize("blank", ["", "   ", "\t \n"])
def test_a_blank_name_is_refused_with_the_file_and_the_key(tiny_copy, tiny_dir, blank):
    names = _names(tiny_dir)
    names[3] = blank
    path = tiny_copy / "label_map.json"
    path.write_text(json.dumps({n: i for i, n in enumerate(names)}), encoding="utf-8")
    expected = re.escape(f"{path}: label names must be non-empty strings, not only spaces; found {blank!r} (index 3)")
    with pytest.raises(ValueError, match=expected):
        LabelMap.from_json(path)
    with pytest.raises(ValueError, match=expected):
        build_model("esp_aves2_sl_beats_all", checkpoint=tiny_copy)


def test_names_with_inner_spaces_and_the_fixture_still_load(tiny_copy, tiny_dir):
    names = _names(tiny_dir)
    assert LabelMap.from_json(tiny_dir / "label_map.json").names == tuple(names)
    assert LabelMap.from_names(["Turdus merula", "Parus major"])["Parus major"] == 1
    with pytest.raises(ValueError, match=re.escape("label map: label names must be non-empty strings, not only "
                                                   "spaces; found ' ' (index 1)")):
        LabelMap.from_names(["Turdus merula", " "])


def test_a_config_field_given_twice_is_refused(tiny_copy):
    path = tiny_copy / "config.json"
    text = path.read_text(encoding="utf-8")
    assert '"encoder_layers": ' in text
    path.write_text(text.replace("{", '{"encoder_layers": 12,', 1), encoding="utf-8")  # then the file's own value
    with pytest.raises(ValueError, match=re.escape(f"{path}: the key 'encoder_layers' is given more than once")):
        build_model("esp_aves2_sl_beats_all", checkpoint=tiny_copy)
