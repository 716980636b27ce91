"""Augmentations: realised SNR, padding untouched, noise from files, mixup's union labels and coefficients."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from avex_hub.audio.augment import AddBackgroundNoise, Mixup, generated_noise, multi_hot


# These tensors are far too small to gain from intra-op threads (conftest's one_torch_thread says why).
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _batch(rows=6, samples=8000, seed=0):
    g = torch.Generator().manual_seed(seed)
    audio = 0.3 * torch.randn(rows, samples, generator=g)
    lengths = torch.randint(samples // 4, samples + 1, (rows,), generator=g)
    lengths[0] = samples
    mask = torch.arange(samples)[None, :] >= lengths[:, None]
    return audio.masked_fill(mask, 0.0), mask


def _snr(clean, noisy, mask):
    valid = ~mask
    noise = (noisy - clean).double()
    return 10 * torch.log10((clean.double()[valid] ** 2).mean() / (noise[valid] ** 2).mean()).item()


def test_noise_realises_the_drawn_snr_on_real_samples_and_keeps_padding_zero():
    audio, mask = _batch()
    aug = AddBackgroundNoise(p=1.0, snr_db=(-10, 20))
    result = aug.apply(audio, mask, generator=torch.Generator().manual_seed(3))
    assert result.applied.all()
    for i in range(audio.shape[0]):
        realised = _snr(audio[i], result.audio[i], mask[i])
        assert abs(realised - result.snr_db[i].item()) < 0.1
        assert -10 <= result.snr_db[i] <= 20
        assert torch.equal(result.audio[i][mask[i]], torch.zeros(int(mask[i].sum())))
    assert not torch.equal(result.audio, audio)


def test_noise_probability_and_snr_distribution():
    audio, mask = _batch(rows=2000, samples=400)
    result = AddBackgroundNoise(p=0.5, snr_db=(-10, 20)).apply(audio, mask, generator=torch.Generator().manual_seed(0))
    share = result.applied.float().mean().item()
    assert 0.45 < share < 0.55  # 2000 Bernoulli(0.5) draws: sd 0.011
    snr = result.snr_db[result.applied]
    assert snr.min() >= -10 and snr.max() <= 20 and snr.min() < -9 and snr.max() > 19
    assert abs(snr.mean().item() - 5.0) < 1.0  # uniform on [-10, 20]
    untouched = ~result.applied
    assert torch.equal(result.audio[untouched], audio[untouched])
    assert torch.isnan(result.snr_db[untouched]).all()


def test_noise_is_seeded_by_the_generator():
    audio, mask = _batch()
    aug = AddBackgroundNoise(p=0.5)
    a = aug(audio, mask, generator=torch.Generator().manual_seed(7))
    b = aug(audio, mask, generator=torch.Generator().manual_seed(7))
    c = aug(audio, mask, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_silent_rows_get_no_noise():
    audio, mask = _batch(rows=3)
    audio[1] = 0.0
    result = AddBackgroundNoise(p=1.0).apply(audio, mask, generator=torch.Generator().manual_seed(0))
    assert result.applied.tolist() == [True, False, True]
    assert torch.equal(result.audio[1], audio[1]) and math.isnan(result.snr_db[1])


def test_noise_from_a_folder_of_files(tmp_path):
    sr, freq = 16000, 1234.0
    t = np.arange(int(0.3 * sr)) / sr  # shorter than the rows: it is repeated
    (tmp_path / "noise" / "sub").mkdir(parents=True)
    sf.write(tmp_path / "noise" / "sub" / "hum.wav", (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32), sr)
    (tmp_path / "noise" / "notes.txt").write_text("not audio")
    aug = AddBackgroundNoise(tmp_path / "noise", p=1.0, snr_db=(0, 0))
    assert len(aug.files) == 1
    audio, mask = _batch(rows=2, samples=16000)
    result = aug.apply(audio, mask, generator=torch.Generator().manual_seed(0))
    added = (result.audio[0] - audio[0]).numpy()
    spectrum = np.abs(np.fft.rfft(added))
    assert abs(np.argmax(spectrum) * sr / len(added) - freq) < 2.0  # the file's tone, not generated noise
    assert abs(_snr(audio[0], result.audio[0], mask[0])) < 0.1


def test_noise_from_a_tensor_bank_and_bad_sources(tmp_path):
    bank = torch.zeros(2, 3000)
    bank[1] = torch.linspace(-1, 1, 3000)
    aug = AddBackgroundNoise(bank, p=1.0, snr_db=(5, 5))
    audio, mask = _batch(rows=8, samples=4000)
    result = aug.apply(audio, mask, generator=torch.Generator().manual_seed(1))
    for i in range(8):  # clip 0 is silent noise: those rows are left alone; the others realise 5 dB
        if result.applied[i]:
            assert abs(_snr(audio[i], result.audio[i], mask[i]) - 5.0) < 0.1
        else:
            assert torch.equal(result.audio[i], audio[i])
    assert 0 < int(result.applied.sum()) < 8
    with pytest.raises(FileNotFoundError, match="noise folder not found"):
        AddBackgroundNoise(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no audio files"):
        AddBackgroundNoise(tmp_path / "empty")
    with pytest.raises(ValueError, match="snr_db"):
        AddBackgroundNoise(snr_db=(20, -10))
    with pytest.raises(ValueError, match="probability"):
        AddBackgroundNoise(p=1.5)


@pytest.mark.parametrize("colour, slope", [("white", 0.0), ("pink", -1.0), ("brown", -2.0)])
def test_generated_noise_colour(colour, slope):
    noise = generated_noise(64, 4096, colour, generator=torch.Generator().manual_seed(0)).double()
    assert torch.allclose(noise.pow(2).mean(dim=1), torch.ones(64, dtype=torch.float64), atol=1e-6)
    power = torch.fft.rfft(noise, dim=1).abs().pow(2).mean(dim=0)[8:1800].numpy()
    freqs = np.arange(8, 1800)
    fitted = np.polyfit(np.log(freqs), np.log(power), 1)[0]
    assert abs(fitted - slope) < 0.15


def test_mixup_unions_labels_and_mixes_with_the_drawn_weights():
    audio, mask = _batch(rows=8)
    targets = multi_hot(torch.tensor([0, 1, 2, 3, 0, 1, 2, 3]), 5)
    targets[5, 4] = 1.0  # one row already multi-label
    mixup = Mixup(p=0.5, weight_range=(0.3, 0.7))
    out = mixup(audio, mask, targets, generator=torch.Generator().manual_seed(2))
    assert 0 < int(out.applied.sum()) < 8
    for i in range(8):
        if not out.applied[i]:
            assert out.partner[i] == -1 and out.weight[i] == 1.0
            assert torch.equal(out.audio[i], audio[i]) and torch.equal(out.targets[i], targets[i])
            assert torch.equal(out.padding_mask[i], mask[i])
            continue
        j, w = int(out.partner[i]), out.weight[i]
        assert j != i and 0.3 <= w <= 0.7
        assert torch.equal(out.audio[i], w * audio[i] + (1 - w) * audio[j])
        assert torch.equal(out.targets[i], torch.maximum(targets[i], targets[j]))
        assert set(out.targets[i].nonzero().flatten().tolist()) == \
            set(targets[i].nonzero().flatten().tolist()) | set(targets[j].nonzero().flatten().tolist())
        assert torch.equal(out.padding_mask[i], mask[i] & mask[j])
        assert torch.equal(out.audio[i][out.padding_mask[i]], torch.zeros(int(out.padding_mask[i].sum())))
    assert torch.equal(audio, _batch(rows=8)[0])  # the input batch is not modified


def test_mixup_partners_cover_every_other_row_and_p_bounds():
    audio, mask = _batch(rows=4, samples=3000)
    targets = multi_hot(torch.arange(4), 4)
    seen = {i: set() for i in range(4)}
    g = torch.Generator().manual_seed(0)
    for _ in range(100):
        out = Mixup(p=1.0)(audio, mask, targets, generator=g)
        assert out.applied.all()
        for i, j in enumerate(out.partner.tolist()):
            seen[i].add(j)
    assert all(seen[i] == set(range(4)) - {i} for i in range(4))
    none = Mixup(p=0.0)(audio, mask, targets, generator=g)
    assert not none.applied.any() and torch.equal(none.audio, audio)
    single = Mixup(p=1.0)(audio[:1], mask[:1], targets[:1], generator=g)
    assert not single.applied.any() and torch.equal(single.audio, audio[:1])
    with pytest.raises(ValueError, match="multi-hot"):
        Mixup()(audio, mask, torch.arange(4), generator=g)
    with pytest.raises(ValueError, match="weight_range"):
        Mixup(weight_range=(0.0, 1.0))


def test_multi_hot():
    assert torch.equal(multi_hot(torch.tensor([2, 0]), 3), torch.tensor([[0., 0., 1.], [1., 0., 0.]]))
    assert multi_hot(torch.ones(2, 3, dtype=torch.long), 3).dtype == torch.float32
    with pytest.raises(ValueError, match="0..2"):
        multi_hot(torch.tensor([3]), 3)
    with pytest.raises(ValueError, match="columns"):
        multi_hot(torch.ones(2, 4), 3)


def test_augment_and_finetune_import_without_lightning():
    code = ("import sys, avex_hub, avex_hub.audio.augment, avex_hub.heads.finetune\n"
            "print(sorted(m for m in ('lightning', 'pytorch_lightning') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=str(__import__("conftest").REPO_ROOT))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
