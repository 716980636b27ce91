"""AudioDataset.subset: rows of a dataset with every setting of the original (issue 12, "Dataset subsetting")."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from avex_hub.audio.datasets import AudioDataset
from avex_hub.audio.synthetic import make_synthetic_dataset

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    """3 species x 2 individuals x 2 clips of 1 s, stereo, a third of them multi-label."""
    return make_synthetic_dataset(tmp_path_factory.mktemp("subset"), num_species=3, individuals_per_species=2,
                                  clips_per_individual=2, clip_s=1.0, stereo=True, multilabel_fraction=0.3, seed=2)


def _settings(dataset: AudioDataset) -> dict:
    """Everything the dataset holds except its rows (and the failures met while building them)."""
    return {k: v for k, v in vars(dataset).items() if k not in ("items", "failures")}


def test_a_subset_keeps_labels_paths_and_every_setting(synth):
    full = AudioDataset.from_manifest(synth.manifest, clip_s=0.5, random_crop=True, seed=7, channels=1,
                                      target_rate=16_000, on_error="skip")
    full.set_epoch(3)
    part = full.subset([4, 0, -1])
    assert [item.path for item in part.items] == [full.items[i].path for i in (4, 0, len(full) - 1)]
    assert part.labels == full.labels and part.multilabel and full.multilabel  # the label order, not the rows'
    np.testing.assert_array_equal(part.targets, full.targets[[4, 0, len(full) - 1]])
    assert _settings(part) == _settings(full)  # a constructor argument added later is carried over as well
    assert (part.clip_s, part.random_crop, part.seed, part.epoch, part.channels) == (0.5, True, 7, 3, 1)
    assert part.failures == [] and len(part) == 3 and isinstance(part, AudioDataset)
    part.set_epoch(9)  # the subset is its own dataset: the original is untouched
    assert full.epoch == 3 and len(full) == len(synth.manifest.read_text().splitlines()) - 1


def test_a_subset_yields_the_originals_items(synth):
    full = AudioDataset.from_manifest(synth.manifest, clip_s=0.5)
    part = full.subset(np.array([5, 2]))
    for row, original in enumerate((5, 2)):
        mine, theirs = part[row], full[original]
        assert mine["path"] == theirs["path"] and mine["index"] == row
        assert torch.equal(mine["audio"], theirs["audio"]) and torch.equal(mine["target"], theirs["target"])
    batch = part.collate([part[0], part[1]])
    assert batch["audio"].shape == (2, 8000)


def test_a_boolean_mask_and_expanded_channels(synth):
    full = AudioDataset.from_manifest(synth.manifest, clip_s=0.5, channels="all")  # one item per channel
    assert len(full) == 2 * len({item.path for item in full.items})
    mask = np.zeros(len(full), dtype=bool)
    mask[[1, 3]] = True
    part = full.subset(mask)
    assert [(item.path, item.channel) for item in part.items] == [(full.items[i].path, full.items[i].channel)
                                                                  for i in (1, 3)]
    assert [item.channel for item in part.items] == [1, 1] and len(part) == 2  # not expanded again
    assert part[0]["channel"] == 1


def test_bad_subset_indices_say_what_was_expected(synth):
    full = AudioDataset.from_manifest(synth.manifest, clip_s=0.5)
    n = len(full)
    with pytest.raises(IndexError, match=rf"positions \[{n}, {n + 5}\] are out of range for a dataset of {n} items; "
                                         rf"expected 0\.\.{n - 1}"):
        full.subset([0, n, n + 5])
    with pytest.raises(IndexError, match=rf"positions \[-{n + 1}\]"):
        full.subset([-(n + 1)])
    with pytest.raises(ValueError, match="needs at least one item, got none"):
        full.subset([])
    with pytest.raises(ValueError, match="needs at least one item"):
        full.subset(np.zeros(n, dtype=bool))
    with pytest.raises(IndexError, match=rf"one entry per item \({n}\), got shape \(2,\)"):
        full.subset([True, False])
    with pytest.raises(TypeError, match="integer positions or a boolean mask, got float64"):
        full.subset([0.0, 1.0])
