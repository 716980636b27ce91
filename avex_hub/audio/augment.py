"""Training-time augmentations on a padded batch: background noise at a random SNR, and in-batch mixup.

    from avex_hub.audio.augment import AddBackgroundNoise, Mixup
    noise = AddBackgroundNoise("noise/", p=0.5, snr_db=(-10, 20))     # or None: generated noise
    mixup = Mixup(p=0.5)
    g = torch.Generator().manual_seed(step)
    mixed = mixup(audio, padding_mask, targets, generator=g)            # targets become the union
    noisy = noise(mixed.audio, mixed.padding_mask, generator=g)

Both work on ``audio [B, S]`` float with ``padding_mask [B, S]`` bool (True = padding, as the model and
:func:`avex_hub.audio.collate.collate_audio` use it) and keep padding at zero. Every random draw comes from the
``generator`` (CPU) given to the call, so a training step can be replayed exactly (resumed runs, DDP ranks).
Results come back by name (:class:`NoiseResult`, :class:`MixupResult`) with what was drawn per row.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from .arrays import SAMPLE_RATE

__all__ = ["AddBackgroundNoise", "Mixup", "NoiseResult", "MixupResult", "generated_noise", "multi_hot"]

_NOISE_COLOURS = ("white", "pink", "brown")


@dataclass
class NoiseResult:
    """``audio`` [B, S] with noise added; ``applied`` [B] bool; ``snr_db`` [B] the SNR drawn for each row
    (NaN where no noise was added: not drawn by ``p``, or a silent row / silent noise, whose SNR is undefined)."""

    audio: torch.Tensor
    applied: torch.Tensor
    snr_db: torch.Tensor


@dataclass
class MixupResult:
    """``audio`` [B, S] = ``weight * audio[i] + (1 - weight) * audio[partner]`` on mixed rows;
    ``padding_mask`` [B, S] padding only where both rows are; ``targets`` [B, C] the union (element-wise max)
    of the two rows' multi-hot targets; ``partner`` [B] long (-1 for rows left alone); ``weight`` [B] (1.0 for
    rows left alone); ``applied`` [B] bool."""

    audio: torch.Tensor
    padding_mask: torch.Tensor
    targets: torch.Tensor
    partner: torch.Tensor
    weight: torch.Tensor
    applied: torch.Tensor


def multi_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Class ids ``[B]`` -> float multi-hot ``[B, num_classes]``; ``[B, C]`` targets are returned as float."""
    if labels.dim() == 2:
        if labels.shape[1] != num_classes:
            raise ValueError(f"targets have {labels.shape[1]} columns but num_classes={num_classes}")
        return labels.float()
    if labels.dim() != 1 or labels.is_floating_point():
        raise ValueError(f"expected integer class ids [B] or multi-hot targets [B, C], got {labels.dtype} "
                         f"{tuple(labels.shape)}")
    if labels.numel() and not (0 <= int(labels.min()) and int(labels.max()) < num_classes):
        raise ValueError(f"class ids must be in 0..{num_classes - 1}, found {labels.min()}..{labels.max()}")
    return torch.nn.functional.one_hot(labels.long(), num_classes).float()


def _check_batch(audio: torch.Tensor, padding_mask: torch.Tensor | None) -> torch.Tensor:
    if not isinstance(audio, torch.Tensor) or audio.dim() != 2 or not audio.is_floating_point():
        raise ValueError(f"expected float audio [batch, samples], got "
                         f"{getattr(audio, 'dtype', type(audio).__name__)} {tuple(getattr(audio, 'shape', ()))}")
    if padding_mask is None:
        return torch.zeros(audio.shape, dtype=torch.bool, device=audio.device)
    if padding_mask.dtype != torch.bool or padding_mask.shape != audio.shape:
        raise ValueError(f"padding_mask must be bool {tuple(audio.shape)} (True = padding), got "
                         f"{padding_mask.dtype} {tuple(padding_mask.shape)}")
    return padding_mask


def _uniform(n: int, low: float, high: float, generator: torch.Generator | None) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator, dtype=torch.float64)


def generated_noise(rows: int, samples: int, colour: str = "white", *,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """Gaussian noise ``[rows, samples]`` float32 with a 1/f^0 (white), 1/f (pink) or 1/f^2 (brown) power
    spectrum, shaped in the frequency domain; zero mean, unit RMS per row."""
    if colour not in _NOISE_COLOURS:
        raise ValueError(f"noise colour must be one of {_NOISE_COLOURS}, got {colour!r}")
    white = torch.randn(rows, samples, generator=generator, dtype=torch.float64)
    if colour != "white":
        spectrum = torch.fft.rfft(white, dim=1)
        freqs = torch.arange(spectrum.shape[1], dtype=torch.float64).clamp(min=1.0)  # DC kept at bin-1 gain
        spectrum = spectrum / freqs.pow(0.5 if colour == "pink" else 1.0)
        white = torch.fft.irfft(spectrum, n=samples, dim=1)
    white = white - white.mean(dim=1, keepdim=True)
    return (white / white.pow(2).mean(dim=1, keepdim=True).sqrt().clamp(min=1e-12)).float()


class AddBackgroundNoise:
    """Add background noise to each row with probability ``p`` at an SNR drawn uniformly in ``snr_db``.

    Args:
        noise_source: a folder of noise recordings (searched recursively for audio files), a list of files,
            a tensor ``[n, samples]`` of 16 kHz noise clips, or ``None`` for generated noise of ``colour``.
            A random stretch of a random clip is used per row; clips shorter than the row are repeated.
        p: probability that a row gets noise.
        snr_db: ``(low, high)`` dB; SNR = 10 log10(signal power / noise power), both powers measured over the
            row's non-padded samples, so the added noise realises the drawn SNR exactly on the real audio.
        colour: ``"white"``, ``"pink"`` or ``"brown"`` for generated noise.
        sample_rate: rate the files are resampled to (the model's 16 kHz).
        max_cached_s: decoded noise files up to this total length stay in memory between calls.

    Padding stays zero. Rows whose real audio is silent, or whose noise stretch is silent, are left unchanged
    (``applied`` False), since an SNR cannot be set for them.
    """

    def __init__(self, noise_source: str | os.PathLike | Sequence | torch.Tensor | None = None, *, p: float = 0.5,
                 snr_db: tuple[float, float] = (-10.0, 20.0), colour: str = "white", sample_rate: int = SAMPLE_RATE,
                 max_cached_s: float = 600.0) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be a probability in [0, 1], got {p!r}")
        low, high = (float(v) for v in snr_db)
        if not (math.isfinite(low) and math.isfinite(high) and low <= high):
            raise ValueError(f"snr_db must be (low, high) finite dB with low <= high, got {snr_db!r}")
        if colour not in _NOISE_COLOURS:
            raise ValueError(f"colour must be one of {_NOISE_COLOURS}, got {colour!r}")
        self.p, self.snr_db, self.colour, self.sample_rate = float(p), (low, high), colour, int(sample_rate)
        self.max_cached_s = float(max_cached_s)
        self.bank: torch.Tensor | None = None
        self.files: list[Path] = []
        self._cache: dict[int, torch.Tensor] = {}
        if isinstance(noise_source, torch.Tensor):
            bank = noise_source.detach().float().cpu()
            if bank.dim() == 1:
                bank = bank.unsqueeze(0)
            if bank.dim() != 2 or 0 in bank.shape or not bool(torch.isfinite(bank).all()):
                raise ValueError(f"a noise tensor must be finite float [clips, samples], got {tuple(bank.shape)}")
            self.bank = bank
        elif noise_source is not None:
            self.files = self._find_files(noise_source)

    @staticmethod
    def _find_files(source) -> list[Path]:
        from .folders import AUDIO_EXTENSIONS, find_audio

        if isinstance(source, (str, os.PathLike)):
            folder = Path(source)
            if not folder.is_dir():
                raise FileNotFoundError(f"noise folder not found: {folder}; pass a folder of noise recordings, a "
                                        "list of files, a tensor, or None for generated noise")
            search = find_audio([folder])
            if search.failures:
                raise PermissionError(f"noise folder {folder}: could not list {sorted(search.failures)}; fix their "
                                      "permissions or pass a list of files")
            files = sorted(Path(f) for f in search.files)
            if not files:
                raise FileNotFoundError(f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) under the noise folder "
                                        f"{folder}")
            return files
        files = [Path(f) for f in source]
        missing = [str(f) for f in files if not f.is_file()]
        if not files or missing:
            raise FileNotFoundError(f"noise files not found: {missing[:10]}" if missing else "the noise file list "
                                    "is empty; pass files, a folder, a tensor or None")
        return files

    def __repr__(self) -> str:
        source = (f"{len(self.files)} files" if self.files else
                  f"tensor of {self.bank.shape[0]} clips" if self.bank is not None else f"generated {self.colour}")
        return f"AddBackgroundNoise({source}, p={self.p}, snr_db={self.snr_db})"

    # -- noise stretches ----------------------------------------------------------------------------------------
    def _file(self, k: int) -> torch.Tensor:
        if k in self._cache:
            return self._cache[k]
        from .decoding import load_audio

        wave = load_audio(self.files[k], target_rate=self.sample_rate, channels="mix").waveform[0]
        cached = sum(v.numel() for v in self._cache.values()) / self.sample_rate
        if cached + wave.numel() / self.sample_rate <= self.max_cached_s:
            self._cache[k] = wave
        return wave

    def _stretch(self, samples: int, generator: torch.Generator | None) -> torch.Tensor:
        """One noise stretch ``[samples]`` from the bank or files, at a random offset (tiled when short)."""
        count = len(self.files) if self.files else self.bank.shape[0]
        k = int(torch.randint(count, (1,), generator=generator))
        clip = self._file(k) if self.files else self.bank[k]
        if clip.numel() < samples:
            clip = clip.repeat(math.ceil(samples / clip.numel()))
        offset = int(torch.randint(clip.numel() - samples + 1, (1,), generator=generator))
        return clip[offset: offset + samples]

    def noise(self, rows: int, samples: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``[rows, samples]`` float32 noise from the configured source (CPU)."""
        if not self.files and self.bank is None:
            return generated_noise(rows, samples, self.colour, generator=generator)
        return torch.stack([self._stretch(samples, generator) for _ in range(rows)])

    # -- the augmentation ---------------------------------------------------------------------------------------
    def apply(self, audio: torch.Tensor, padding_mask: torch.Tensor | None = None, *,
              generator: torch.Generator | None = None) -> NoiseResult:
        mask = _check_batch(audio, padding_mask)
        rows = audio.shape[0]
        chosen = torch.rand(rows, generator=generator) < self.p
        snr = _uniform(rows, *self.snr_db, generator)
        out = audio.clone()
        applied = torch.zeros(rows, dtype=torch.bool)
        picked = chosen.nonzero().flatten().tolist()
        if picked:
            noise = self.noise(len(picked), audio.shape[1], generator).to(device=audio.device, dtype=torch.float64)
            valid = (~mask[picked]).to(torch.float64)  # [n, S]
            count = valid.sum(dim=1).clamp(min=1.0)
            signal = audio[picked].double()
            p_signal = (signal.pow(2) * valid).sum(dim=1) / count
            p_noise = (noise.pow(2) * valid).sum(dim=1) / count
            ok = (p_signal > 0) & (p_noise > 0)
            target = snr[picked].to(audio.device)
            scale = torch.where(ok, (p_signal / (p_noise.clamp(min=1e-30) * 10.0 ** (target / 10.0))).sqrt(),
                                torch.zeros_like(p_signal))
            out[picked] = (signal + scale[:, None] * noise * valid).to(audio.dtype)
            applied[picked] = ok.cpu()
        return NoiseResult(out, applied, torch.where(applied, snr, torch.full_like(snr, math.nan)))

    def __call__(self, audio: torch.Tensor, padding_mask: torch.Tensor | None = None, *,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """The noisy audio ``[B, S]``; :meth:`apply` also returns what was drawn."""
        return self.apply(audio, padding_mask, generator=generator).audio


class Mixup:
    """Mix each row, with probability ``p``, with another random row of the batch; labels become the union.

    The partner of row i is another row (never i itself), drawn uniformly; the mix is
    ``w * audio[i] + (1 - w) * audio[partner]`` with ``w`` uniform in ``weight_range`` (amplitude weights),
    computed from the batch as it came in (a row mixed into another is still the original). The target of a
    mixed row is the element-wise max of the two rows' multi-hot targets, as for multi-label training: both
    sounds are present. ``padding_mask`` of a mixed row is padding only where both rows were padding.
    A batch of one row is returned unchanged.
    """

    def __init__(self, p: float = 0.5, *, weight_range: tuple[float, float] = (0.3, 0.7)) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be a probability in [0, 1], got {p!r}")
        low, high = (float(v) for v in weight_range)
        if not 0.0 < low <= high < 1.0:
            raise ValueError(f"weight_range must satisfy 0 < low <= high < 1, got {weight_range!r}")
        self.p, self.weight_range = float(p), (low, high)

    def __repr__(self) -> str:
        return f"Mixup(p={self.p}, weight_range={self.weight_range})"

    def __call__(self, audio: torch.Tensor, padding_mask: torch.Tensor | None, targets: torch.Tensor, *,
                 generator: torch.Generator | None = None) -> MixupResult:
        mask = _check_batch(audio, padding_mask)
        rows = audio.shape[0]
        if targets.dim() != 2 or targets.shape[0] != rows:
            raise ValueError(f"targets must be multi-hot [batch={rows}, classes], got {tuple(targets.shape)}; "
                             "convert class ids with avex_hub.audio.augment.multi_hot(labels, num_classes)")
        chosen = torch.rand(rows, generator=generator) < self.p
        # Another row for every row: i + 1 .. i + rows - 1 (mod rows) never lands on i.
        offset = torch.randint(1, max(rows, 2), (rows,), generator=generator)
        weight = _uniform(rows, *self.weight_range, generator).float()
        if rows < 2:
            chosen[:] = False
        partner = torch.where(chosen, (torch.arange(rows) + offset) % max(rows, 1), torch.full((rows,), -1))
        weight = torch.where(chosen, weight, torch.ones(rows))
        out, out_mask, out_targets = audio.clone(), mask.clone(), targets.clone()
        picked = chosen.nonzero().flatten()
        if len(picked):
            other = partner[picked]
            w = weight[picked].to(device=audio.device, dtype=audio.dtype)[:, None]
            dev_picked, dev_other = picked.to(audio.device), other.to(audio.device)
            out[dev_picked] = w * audio[dev_picked] + (1.0 - w) * audio[dev_other]
            out_mask[dev_picked] = mask[dev_picked] & mask[dev_other]
            out_targets[dev_picked] = torch.maximum(targets[dev_picked], targets[dev_other])
        return MixupResult(out, out_mask, out_targets, partner, weight, chosen)
