"""The audio input contract (avex_hub.audio: arrays, resampling, high_frequency, quality, decoding, collate): real files written with soundfile, real values checked."""

from __future__ import annotations

import math
import tracemalloc
import warnings

import numpy as np
import pytest
import soundfile as sf
import torch

from avex_hub.audio import arrays, collate, decoding, folders, high_frequency, quality, resampling, wav_header
from avex_hub.audio.arrays import MIN_SAMPLES, SAMPLE_RATE, select_channels, to_float_audio
from avex_hub.audio.collate import collate_audio, pad_or_crop
from avex_hub.audio.decoding import Audio, AudioDecodeError, audio_info, load_audio
from avex_hub.audio.high_frequency import HighFrequencyContentWarning, high_frequency_energy_fraction
from avex_hub.audio.quality import QualityFlags, quality_flags
from avex_hub.audio.resampling import resample
from avex_hub.audio.windows import Window, stream_windows, window_starts, windows_from_array


def tone(freq: float, sr: int, seconds: float, amp: float = 0.5, phase: float = 0.0) -> np.ndarray:
    t = np.arange(round(sr * seconds)) / sr
    return (amp * np.sin(2 * np.pi * freq * t + phase)).astype(np.float32)


def peak_hz(x, sr: int) -> float:
    x = np.asarray(x, dtype=np.float64)
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / sr)[spectrum.argmax()])


def write(path, data: np.ndarray, sr: int, **kw) -> str:
    sf.write(str(path), data, sr, **kw)
    return str(path)


@pytest.fixture
def no_hf_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error", HighFrequencyContentWarning)
        yield


# -- constants and array conversion -----------------------------------------------------------------
def test_constants_match_the_model(tiny_model):
    """MIN_SAMPLES is what the model really needs: one 16-frame patch row of the filterbank, no less."""
    assert SAMPLE_RATE == tiny_model.sample_rate == 16_000 and MIN_SAMPLES == 2_800
    audio = 0.1 * torch.randn(1, MIN_SAMPLES, generator=torch.Generator().manual_seed(0))
    assert tiny_model.fbank(audio).shape[1] == 16  # [batch, frames, mel bins]: exactly one patch row
    assert torch.isfinite(tiny_model(audio)).all()
    with pytest.raises(ValueError, match=f"the {MIN_SAMPLES} samples"):
        tiny_model(audio[:, :-1])


def test_to_float_audio_scales_integer_pcm():
    pcm16 = np.array([-32768, 0, 16384, 32767], dtype=np.int16)
    np.testing.assert_allclose(to_float_audio(pcm16).numpy(), [-1.0, 0.0, 0.5, 32767 / 32768])
    np.testing.assert_allclose(to_float_audio(torch.from_numpy(pcm16)).numpy(), [-1.0, 0.0, 0.5, 32767 / 32768])
    pcm32 = np.array([-(2**31), 2**30], dtype=np.int32)
    np.testing.assert_allclose(to_float_audio(pcm32).numpy(), [-1.0, 0.5])
    np.testing.assert_allclose(to_float_audio(np.array([0, 128, 192], dtype=np.uint8)).numpy(), [-1.0, 0.0, 0.5])
    np.testing.assert_allclose(to_float_audio(np.array([-128, 64], dtype=np.int8)).numpy(), [-1.0, 0.5])
    assert to_float_audio(pcm16).dtype == torch.float32


def test_to_float_audio_float_inputs():
    out = to_float_audio(np.array([[0.25, -0.5]], dtype=np.float64))
    assert out.dtype == torch.float32 and out.shape == (1, 2)
    assert to_float_audio([0.1, 0.2]).tolist() == pytest.approx([0.1, 0.2])
    assert to_float_audio(torch.tensor([1.0], dtype=torch.bfloat16)).dtype == torch.float32
    assert to_float_audio(np.arange(4, dtype=np.float16)).tolist() == [0, 1, 2, 3]
    readonly = np.linspace(-1, 1, 8, dtype=np.float32)
    readonly.flags.writeable = False
    assert to_float_audio(readonly[::-1])[0] == 1.0  # reversed (negative stride) and read-only


@pytest.mark.parametrize("bad, needle", [
    (np.array([True, False]), "bool"),
    (np.array([1 + 2j]), "complex"),
    (np.array(["a"], dtype=object), "object"),
    (np.array([1, 2], dtype=np.int64), "full-scale"),
    (torch.tensor([True]), "bool"),
    ("recording.wav", "load_audio"),
])
def test_to_float_audio_refuses_types(bad, needle):
    with pytest.raises(TypeError, match=needle) as info:
        to_float_audio(bad)
    assert "expected" in str(info.value)


def test_to_float_audio_reports_non_finite_samples():
    x = np.zeros((2, 100), dtype=np.float32)
    x[1, 7] = np.nan
    x[1, 9] = np.inf
    with pytest.raises(ValueError, match=r"clip has 2 NaN or infinite samples of 200 \(first at index \(1, 7\)"):
        to_float_audio(x, name="clip")
    with pytest.raises(ValueError, match="scalar"):
        to_float_audio(np.float32(0.5))


# -- channels -------------------------------------------------------------------------------------
def test_select_channels_modes():
    x = torch.tensor([[1.0, 2.0, 3.0], [3.0, 4.0, 5.0], [5.0, 6.0, 10.0]])
    mixed, ids = select_channels(x, "mix")
    assert ids == [None] and mixed.tolist() == [[3.0, 4.0, 6.0]]
    one, ids = select_channels(x, 1)
    assert ids == [1] and one.tolist() == [[3.0, 4.0, 5.0]]
    last, ids = select_channels(x, -1)
    assert ids == [2] and last.tolist() == [[5.0, 6.0, 10.0]]
    every, ids = select_channels(x.numpy(), "all")
    assert ids == [0, 1, 2] and torch.equal(every, x)


def test_select_channels_errors():
    x = torch.zeros(2, 10)
    with pytest.raises(ValueError, match=r"channel 2 requested but audio has 2 channel\(s\); use 0..1"):
        select_channels(x, 2)
    with pytest.raises(ValueError, match="'mix', 'all' or a channel index"):
        select_channels(x, "left")
    with pytest.raises(ValueError, match="'mix', 'all' or a channel index"):
        select_channels(x, True)
    with pytest.raises(ValueError, match=r"\[channels, samples\]"):
        select_channels(torch.zeros(10), "mix")


# -- resampling -----------------------------------------------------------------------------------
@pytest.mark.parametrize("sr", [44_100, 48_000, 96_000, 8_000, 22_050])
def test_resample_keeps_frequency_and_length(sr, no_hf_warning):
    x = tone(1000, sr, 1.5)
    y = resample(x, sr, SAMPLE_RATE)
    assert y.dtype == torch.float32 and y.shape == (round(len(x) * SAMPLE_RATE / sr),)
    assert peak_hz(y, SAMPLE_RATE) == pytest.approx(1000, abs=1.0)
    core = y[1000:-1000].numpy()  # away from the edges the amplitude is kept
    assert np.abs(core).max() == pytest.approx(0.5, abs=0.01)
    assert np.sqrt(np.mean(core**2)) == pytest.approx(0.5 / math.sqrt(2), rel=0.01)


def test_resample_shapes_identity_and_rates():
    x = torch.randn(2, 3, 4410) * 0.1
    y = resample(x, 44_100, 16_000, warn=False)
    assert y.shape == (2, 3, 1600)
    assert torch.allclose(resample(x[1, 2], 44_100, 16_000, warn=False), y[1, 2], atol=1e-6)  # rows are independent
    same = torch.randn(100)
    assert resample(same, 16_000, 16_000) is same
    pcm = (tone(440, 16_000, 0.1) * 32768).astype(np.int16)
    assert torch.allclose(resample(pcm, 16_000), torch.from_numpy(pcm / 32768.0).float())
    for bad in (0, -8000, 44_100.5, float("nan"), True):
        with pytest.raises(ValueError, match="orig_sr must be a positive whole number"):
            resample(same, bad, 16_000)


def test_high_frequency_energy_fraction():
    assert high_frequency_energy_fraction(tone(40_000, 250_000, 0.5), 250_000) == pytest.approx(1.0, abs=1e-3)
    assert high_frequency_energy_fraction(tone(1000, 48_000, 0.5), 48_000) < 1e-6
    both = tone(1000, 48_000, 1.0) + tone(12_000, 48_000, 1.0)
    assert high_frequency_energy_fraction(both, 48_000) == pytest.approx(0.5, abs=0.01)
    assert high_frequency_energy_fraction(tone(3000, 48_000, 0.3), 48_000, cutoff_hz=2000) > 0.99
    assert high_frequency_energy_fraction(tone(7000, 16_000, 0.5), 16_000) == 0.0  # nothing above 8 kHz exists
    assert high_frequency_energy_fraction(np.zeros(50_000, np.float32), 48_000) == 0.0
    stereo = np.stack([tone(1000, 96_000, 0.2), tone(20_000, 96_000, 0.2)])
    assert high_frequency_energy_fraction(stereo, 96_000) == pytest.approx(0.5, abs=0.01)


def test_high_rate_warning_names_rate_energy_and_remedy(tmp_path):
    bat = write(tmp_path / "bat.wav", tone(40_000, 250_000, 0.4), 250_000, subtype="FLOAT")
    with pytest.warns(HighFrequencyContentWarning) as record:
        out = load_audio(bat)
    assert len(record) == 1
    message = str(record[0].message)
    assert "250000 Hz" in message and "bat.wav" in message and "100.0%" in message and "8 kHz" in message
    assert "time-expand" in message
    assert out.waveform[0, 100:-100].abs().max() < 0.01  # the tone is gone: that is why the warning exists
    assert out.flags[0].silent


def test_no_warning_for_audible_content(tmp_path, no_hf_warning):
    load_audio(write(tmp_path / "a.wav", tone(1000, 48_000, 0.5), 48_000))
    resample(tone(40_000, 250_000, 0.1), 250_000, warn=False)
    resample(tone(1000, 8_000, 0.1), 8_000)  # upsampling loses nothing


def test_high_rate_warning_once_per_source(tmp_path):
    bat = write(tmp_path / "bat.wav", tone(40_000, 250_000, 0.2), 250_000)
    other = write(tmp_path / "other.wav", tone(30_000, 250_000, 0.2), 250_000)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("default")  # Python's normal filter: show each distinct message once
        for _ in range(3):
            load_audio(bat)
        load_audio(other)
    assert [str(w.message).split(":")[0] for w in record] == [bat, other]


def test_stream_windows_warns_for_high_rate(tmp_path):
    bat = write(tmp_path / "bat.wav", tone(40_000, 250_000, 1.0), 250_000)
    with pytest.warns(HighFrequencyContentWarning, match="250000 Hz") as record:
        windows = list(stream_windows(bat, window_s=0.5, block_s=0.25))
    assert len(record) == 1 and len(windows) == 2


# -- files ----------------------------------------------------------------------------------------
def test_load_wav_16k_is_exact(tmp_path, no_hf_warning):
    pcm = (tone(440, 16_000, 1.0) * 32767).astype(np.int16)
    out = load_audio(write(tmp_path / "a.wav", pcm, 16_000))
    assert isinstance(out, Audio)
    assert out.waveform.shape == (1, 16_000) and out.waveform.dtype == torch.float32
    assert torch.equal(out.waveform[0], torch.from_numpy(pcm.astype(np.float32) / 32768))
    assert (out.sample_rate, out.source_sample_rate, out.channels, out.start_s) == (16_000, 16_000, [None], 0.0)
    assert out.path == str(tmp_path / "a.wav") and out.duration_s == 1.0
    assert out.flags == [quality_flags(out.waveform[0])]


@pytest.mark.parametrize("sr", [44_100, 48_000, 96_000])
def test_load_resamples_to_16k(tmp_path, sr, no_hf_warning):
    path = write(tmp_path / f"a{sr}.wav", tone(1000, sr, 2.0), sr)
    out = load_audio(path)
    assert out.source_sample_rate == sr and out.sample_rate == 16_000
    assert out.waveform.shape == (1, 32_000)
    assert peak_hz(out.waveform[0], 16_000) == pytest.approx(1000, abs=1.0)
    assert load_audio(path, target_rate=8_000).waveform.shape == (1, 16_000)


def test_load_channel_modes(tmp_path):
    left, right = tone(1000, 48_000, 1.0, 0.6), tone(500, 48_000, 1.0, 0.2)
    path = write(tmp_path / "stereo.wav", np.stack([left, right], axis=1), 48_000, subtype="FLOAT")
    every = load_audio(path, channels="all")
    assert every.channels == [0, 1] and every.waveform.shape == (2, 16_000) and len(every.flags) == 2
    assert peak_hz(every.waveform[0], 16_000) == pytest.approx(1000, abs=1)
    assert peak_hz(every.waveform[1], 16_000) == pytest.approx(500, abs=1)
    one = load_audio(path, channels=1)
    assert one.channels == [1] and torch.allclose(one.waveform[0], every.waveform[1])
    mix = load_audio(path)
    assert mix.channels == [None]
    assert torch.allclose(mix.waveform[0], every.waveform.mean(dim=0), atol=1e-6)
    with pytest.raises(ValueError, match=r"channel 2 requested but .*stereo.wav has 2 channel"):
        load_audio(path, channels=2)


def test_load_start_end(tmp_path):
    x = np.random.default_rng(0).uniform(-0.5, 0.5, 16_000 * 3).astype(np.float32)
    path = write(tmp_path / "noise.wav", x, 16_000, subtype="FLOAT")
    part = load_audio(path, start_s=0.5, end_s=1.25)
    assert part.start_s == 0.5 and part.waveform.shape == (1, 12_000)
    assert torch.equal(part.waveform[0], torch.from_numpy(x[8_000:20_000]))
    assert torch.equal(load_audio(path, start_s=2.0).waveform[0], torch.from_numpy(x[32_000:]))
    assert load_audio(path, end_s=100.0).waveform.shape == (1, 48_000)  # past the end reads to the end
    with pytest.raises(ValueError, match=r"start_s=3.0 is at or past the end of .*noise.wav \(3.000 s"):
        load_audio(path, start_s=3.0)
    with pytest.raises(ValueError, match="must be after start_s"):
        load_audio(path, start_s=1.0, end_s=1.0)
    with pytest.raises(ValueError, match="start_s must be a time in seconds >= 0"):
        load_audio(path, start_s=-1)


def test_load_start_end_with_resampling(tmp_path, no_hf_warning):
    path = write(tmp_path / "a.wav", tone(1000, 48_000, 3.0), 48_000)
    part = load_audio(path, start_s=1.0, end_s=2.5)
    assert part.start_s == 1.0 and part.waveform.shape == (1, 24_000)
    assert peak_hz(part.waveform[0], 16_000) == pytest.approx(1000, abs=1)


@pytest.mark.parametrize("fmt, subtype, sr", [("FLAC", "PCM_24", 44_100), ("OGG", "VORBIS", 44_100),
                                              ("OGG", "OPUS", 48_000), ("MP3", "MPEG_LAYER_III", 48_000)])
def test_compressed_formats(tmp_path, fmt, subtype, sr, no_hf_warning):
    if subtype not in sf.available_subtypes(fmt):
        pytest.skip(f"libsndfile {sf.__libsndfile_version__} cannot write {fmt}/{subtype}")
    path = write(tmp_path / f"a.{fmt.lower()}", tone(1000, sr, 2.0), sr, format=fmt, subtype=subtype)
    info = audio_info(path)
    assert (info.format, info.subtype, info.sample_rate, info.channels) == (fmt, subtype, sr, 1)
    out = load_audio(path)
    assert abs(out.waveform.shape[1] - 32_000) <= 0.06 * 16_000  # lossy codecs add a few ms of delay/padding
    assert peak_hz(out.waveform[0], 16_000) == pytest.approx(1000, abs=2)
    if fmt == "FLAC":  # lossless: the same as the WAV path
        wav = write(tmp_path / "a.wav", tone(1000, sr, 2.0), sr, subtype="PCM_24")
        assert torch.allclose(out.waveform, load_audio(wav).waveform, atol=1e-6)
    else:
        assert out.waveform[0, 4000:-4000].abs().max() == pytest.approx(0.5, abs=0.05)


def test_audio_info(tmp_path):
    path = write(tmp_path / "s.wav", np.zeros((4410, 2), np.float32), 44_100)
    info = audio_info(path)
    assert (info.path, info.sample_rate, info.channels, info.frames) == (path, 44_100, 2, 4410)
    assert info.duration_s == pytest.approx(0.1) and (info.format, info.subtype) == ("WAV", "PCM_16")


def test_bad_files(tmp_path):
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk" + bytes(range(200)))
    for call in (load_audio, audio_info, stream_windows):
        with pytest.raises(AudioDecodeError, match=r"empty.wav: the file is empty \(0 bytes\).*re-download"):
            call(empty)
        with pytest.raises(AudioDecodeError, match=r"corrupt.wav: cannot decode audio .*convert it") as info:
            call(corrupt)
        assert isinstance(info.value, ValueError)
        with pytest.raises(FileNotFoundError, match="missing.wav"):
            call(tmp_path / "missing.wav")  # stream_windows raises before the first window is asked for
    with pytest.raises(IsADirectoryError):
        load_audio(tmp_path)


def test_non_finite_file_and_zero_frames(tmp_path):
    x = tone(440, 16_000, 0.5)
    x[100] = np.nan
    path = write(tmp_path / "nan.wav", x, 16_000, subtype="FLOAT")
    with pytest.raises(ValueError, match=r"nan.wav has 1 NaN or infinite samples"):
        load_audio(path)
    with pytest.raises(ValueError, match=r"nan.wav has 1 NaN"):
        list(stream_windows(path, window_s=1.0))
    nothing = write(tmp_path / "nothing.wav", np.zeros(0, np.float32), 16_000)
    with pytest.raises(AudioDecodeError, match="no audio frames"):
        load_audio(nothing)
    with pytest.raises(AudioDecodeError, match="no audio frames"):
        stream_windows(nothing)


def test_truncated_files_decode_what_is_there(tmp_path, no_hf_warning):
    wav = write(tmp_path / "full.wav", tone(1000, 16_000, 2.0), 16_000)
    cut = tmp_path / "cut.wav"
    cut.write_bytes(open(wav, "rb").read()[: 44 + 2 * 10_000])  # header + 10000 PCM_16 samples
    assert load_audio(cut).waveform.shape == (1, 10_000)
    assert spans(list(stream_windows(cut, window_s=0.5, block_s=0.2))) == [(0, 8_000), (8_000, 10_000)]
    if "MPEG_LAYER_III" not in sf.available_subtypes("MP3"):
        pytest.skip("libsndfile cannot write MP3")
    mp3 = write(tmp_path / "full.mp3", tone(1000, 48_000, 4.0), 48_000, format="MP3")
    cut_mp3 = tmp_path / "cut.mp3"
    cut_mp3.write_bytes(open(mp3, "rb").read()[: 10_000])
    decoded = load_audio(cut_mp3).waveform.shape[1]
    assert 0 < decoded < 3 * 16_000  # the header still says 4 s
    windows = list(stream_windows(cut_mp3, window_s=0.5, block_s=0.3))
    assert spans(windows)[-1][1] == pytest.approx(decoded, abs=16)
    with pytest.raises(AudioDecodeError, match=r"cut.mp3: no audio could be decoded from 3.500 s on.*truncated"):
        load_audio(cut_mp3, start_s=3.5)


# -- quality flags --------------------------------------------------------------------------------
def test_quality_flags_values():
    sine = tone(440, 16_000, 1.0, amp=0.5)
    flags = quality_flags(sine)
    assert not (flags.clipped or flags.silent or flags.too_short) and flags.ok
    assert flags.peak == pytest.approx(0.5, abs=1e-3) and flags.rms_db == pytest.approx(-9.03, abs=0.02)
    assert quality_flags(np.clip(sine * 4, -1, 1)).clipped
    lone = sine.copy()
    lone[0] = 1.0  # 1 of 16000 samples (< 0.1%) at full scale is not clipping
    assert not quality_flags(lone).clipped
    assert quality_flags(np.full(100, 0.9995, np.float32)).clipped
    zeros = quality_flags(np.zeros(16_000, np.float32))
    assert zeros.silent and zeros.rms_db == -math.inf and not zeros.ok
    assert quality_flags(sine * 10 ** (-65 / 20)).silent and not quality_flags(sine * 10 ** (-45 / 20)).silent
    assert quality_flags(sine[:MIN_SAMPLES - 1]).too_short and not quality_flags(sine[:MIN_SAMPLES]).too_short
    assert quality_flags(np.zeros(8_400), 48_000).too_short is False  # 8400 at 48 kHz = 2800 at 16 kHz
    assert quality_flags(np.zeros(8_390), 48_000).too_short is True
    assert quality_flags(np.zeros(0, np.float32)) == QualityFlags(False, True, True, 0.0, -math.inf)
    assert quality_flags(torch.zeros(1, 3000)).too_short is False
    with pytest.raises(ValueError, match=r"one row of samples"):
        quality_flags(np.zeros((2, 3000)))


def test_load_audio_flags(tmp_path):
    loud = np.clip(tone(440, 48_000, 1.0, amp=3.0), -1, 1)
    path = write(tmp_path / "loud.wav", np.stack([loud, np.zeros_like(loud)], axis=1), 48_000)
    flags = load_audio(path, channels="all").flags
    assert flags[0].clipped and not flags[0].silent
    assert flags[1].silent and not flags[1].clipped
    short = write(tmp_path / "short.wav", tone(440, 16_000, 0.1), 16_000)
    assert load_audio(short).flags[0].too_short


# -- windows --------------------------------------------------------------------------------------
def spans(windows: list[Window], sr: int = SAMPLE_RATE) -> list[tuple[int, int]]:
    return [(round(w.start_s * sr), round(w.end_s * sr)) for w in windows]


def test_windows_from_array_tiles_and_pads():
    x = np.random.default_rng(1).uniform(-0.5, 0.5, 16_000 * 25).astype(np.float32)
    windows = windows_from_array(x, 16_000, window_s=10.0)
    assert spans(windows) == [(0, 160_000), (160_000, 320_000), (320_000, 400_000)]
    assert [w.index for w in windows] == [0, 1, 2] and all(w.channel is None for w in windows)
    for w, (s, e) in zip(windows, spans(windows)):
        assert w.audio.shape == w.padding_mask.shape == (160_000,) and w.padding_mask.dtype == torch.bool
        assert torch.equal(w.audio[: e - s], torch.from_numpy(x[s:e]))
        assert not w.padding_mask[: e - s].any() and w.padding_mask[e - s:].all()
        assert w.audio[e - s:].abs().sum() == 0
    assert windows[2].end_s == 25.0 and int(windows[2].padding_mask.sum()) == 80_000


def test_windows_with_hop_exact_fit_and_short_input():
    x = np.zeros(16_000 * 25, np.float32) + 0.1
    assert spans(windows_from_array(x, 16_000, window_s=10, hop_s=5)) == [
        (0, 160_000), (80_000, 240_000), (160_000, 320_000), (240_000, 400_000)]  # last one ends at the end: stop
    assert spans(windows_from_array(x[:320_000], 16_000, window_s=10)) == [(0, 160_000), (160_000, 320_000)]
    only = windows_from_array(x[:1000], 16_000, window_s=1.0)
    assert len(only) == 1 and only[0].flags.too_short and int((~only[0].padding_mask).sum()) == 1000
    tail = windows_from_array(x[:16_100], 16_000, window_s=1.0)  # 100 samples past the first window
    assert spans(tail) == [(0, 16_000), (16_000, 16_100)] and tail[1].flags.too_short and not tail[0].flags.too_short


@pytest.mark.parametrize("total, window_s, hop_s", [(50_000, 1.0, 1.0), (50_000, 1.0, 0.3), (16_000, 1.0, 0.25),
                                                    (3_000, 0.5, 0.2), (123_457, 0.75, 0.5)])
def test_every_sample_is_covered_once_enough(total, window_s, hop_s):
    windows = windows_from_array(np.full(total, 0.1, np.float32), 16_000, window_s=window_s, hop_s=hop_s)
    covered = np.zeros(total, bool)
    for s, e in spans(windows):
        covered[s:e] = True
    assert covered.all()
    starts = [s for s, _ in spans(windows)]
    assert starts == sorted(starts) and spans(windows)[-1][1] == total
    assert len(windows) == 1 or spans(windows)[-2][1] < total  # no window after one that reached the end


def test_window_starts_rule_and_argument_checks():
    assert window_starts(0, 4000, 1000) == range(0)  # nothing to cover
    assert list(window_starts(1, 4000, 4000)) == [0]  # shorter than a window: one, padded
    assert list(window_starts(16_000, 16_000, 8000)) == [0]  # the first window reaches the end: no second
    assert list(window_starts(25, 10, 5)) == [0, 5, 10, 15]  # 15 + 10 reaches 25 exactly: the last
    assert list(window_starts(26, 10, 5)) == [0, 5, 10, 15, 20]  # one sample more: one window more
    assert list(window_starts(20, 10, 10)) == [0, 10] and list(window_starts(21, 10, 10)) == [0, 10, 20]
    for total, window, hop in ((10, 5, 6), (10, 5, 0), (-1, 5, 5)):
        with pytest.raises(ValueError, match=f"got total={total}, window={window}, hop={hop}; a longer hop"):
            window_starts(total, window, hop)


def test_windows_multichannel_time_major():
    x = np.stack([np.full(40_000, 0.1), np.full(40_000, -0.2), np.full(40_000, 0.3)]).astype(np.float32)
    windows = windows_from_array(x, 16_000, window_s=1.0, channels="all")
    assert [(w.index, w.channel) for w in windows] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2),
                                                       (2, 0), (2, 1), (2, 2)]
    assert windows[4].audio[0].item() == pytest.approx(-0.2)
    mixed = windows_from_array(x, 16_000, window_s=1.0)
    assert len(mixed) == 3 and mixed[0].audio[0].item() == pytest.approx(0.2 / 3)
    picked = windows_from_array(x, 16_000, window_s=1.0, channels=2)
    assert {w.channel for w in picked} == {2} and picked[0].audio[0].item() == pytest.approx(0.3)


def test_window_argument_errors(tmp_path):
    x = np.zeros(16_000, np.float32)
    with pytest.raises(ValueError, match="a longer hop would skip audio"):
        windows_from_array(x, 16_000, window_s=1.0, hop_s=2.0)
    with pytest.raises(ValueError, match="shorter than the model's minimum input"):
        windows_from_array(x, 16_000, window_s=0.1)
    with pytest.raises(ValueError, match=r"\[samples\] or \[channels, samples\]"):
        windows_from_array(np.zeros((1, 2, 3), np.float32), 16_000, window_s=1.0)
    path = write(tmp_path / "a.wav", x, 16_000)
    with pytest.raises(ValueError, match="block_s must be positive"):
        stream_windows(path, block_s=0)


@pytest.mark.parametrize("sr, channels", [(48_000, "all"), (44_100, "mix"), (16_000, "all"), (8_000, 1)])
def test_stream_equals_array(tmp_path, sr, channels, no_hf_warning):
    rng = np.random.default_rng(2)
    seconds = 22.1
    data = np.stack([tone(1000, sr, seconds, 0.4), tone(300, sr, seconds, 0.3)], axis=1)
    data += rng.normal(0, 0.01, data.shape).astype(np.float32)
    path = write(tmp_path / "long.wav", data, sr, subtype="FLOAT")
    streamed = list(stream_windows(path, window_s=5.0, hop_s=3.5, channels=channels, block_s=2.7))
    in_memory = windows_from_array(data.T, sr, window_s=5.0, hop_s=3.5, channels=channels, path=path)
    assert len(streamed) == len(in_memory) == 6 * (2 if channels == "all" else 1)
    for s, m in zip(streamed, in_memory):
        assert (s.index, s.channel, s.path) == (m.index, m.channel, path)
        assert (s.start_s, s.end_s) == pytest.approx((m.start_s, m.end_s))
        assert torch.equal(s.padding_mask, m.padding_mask)
        assert torch.allclose(s.audio, m.audio, atol=1e-4)
        assert s.flags.too_short == m.flags.too_short
    last = streamed[-1]
    assert last.start_s == pytest.approx(17.5) and last.end_s == pytest.approx(seconds)
    assert int((~last.padding_mask).sum()) == round(seconds * 16_000) - 17.5 * 16_000


def test_stream_reads_in_blocks(tmp_path, monkeypatch):
    sr = 8_000
    path = tmp_path / "long.wav"
    with sf.SoundFile(str(path), "w", sr, 1, "PCM_16") as f:
        for i in range(12):  # two minutes written 10 s at a time
            f.write(tone(440 + 10 * i, sr, 10.0, 0.3))
    reads = []
    original = sf.SoundFile.read

    def spy(self, frames=-1, *args, **kwargs):
        out = original(self, frames, *args, **kwargs)
        reads.append((frames, len(out)))
        return out

    monkeypatch.setattr(sf.SoundFile, "read", spy)
    windows = list(stream_windows(path, window_s=10.0, block_s=4.0))
    assert len(windows) == 12 and windows[-1].end_s == pytest.approx(120.0)
    assert all(0 < frames <= 4 * sr for frames, _ in reads)  # never "read everything" (frames=-1)
    assert sum(n for _, n in reads) == 120 * sr


def _peak_streaming_bytes(path) -> int:
    tracemalloc.start()
    try:
        for _ in stream_windows(path, window_s=5.0, block_s=2.0):
            pass
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_stream_memory_independent_of_length(tmp_path):
    sr = 8_000
    sizes = {}
    for minutes in (1, 8):
        path = tmp_path / f"{minutes}min.wav"
        with sf.SoundFile(str(path), "w", sr, 1, "PCM_16") as f:
            for _ in range(minutes * 6):
                f.write(tone(700, sr, 10.0, 0.3))
        sizes[minutes] = _peak_streaming_bytes(path)
    whole_file = 8 * 60 * 16_000 * 4  # the 8-minute file at 16 kHz float32: 30 MB
    assert sizes[8] < 1.5 * sizes[1] + 200_000
    assert sizes[8] < whole_file / 10


# -- batches --------------------------------------------------------------------------------------
def test_pad_or_crop():
    x = torch.arange(10, dtype=torch.float32)
    padded, mask = pad_or_crop(x, 14)
    assert padded.tolist() == list(range(10)) + [0] * 4 and mask.tolist() == [False] * 10 + [True] * 4
    cropped, mask = pad_or_crop(x, 4)
    assert cropped.tolist() == [0, 1, 2, 3] and not mask.any()
    exact, mask = pad_or_crop(x, 10)
    assert torch.equal(exact, x) and not mask.any()
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    crops = [pad_or_crop(x, 4, random=True, generator=g1)[0] for _ in range(20)]
    assert all(c.tolist() == list(range(int(c[0]), int(c[0]) + 4)) for c in crops)
    assert len({int(c[0]) for c in crops}) > 1 and max(int(c[0]) for c in crops) <= 6
    assert [c.tolist() for c in crops] == [pad_or_crop(x, 4, random=True, generator=g2)[0].tolist() for _ in range(20)]
    stereo, mask = pad_or_crop(np.ones((2, 5), np.float32), 8)
    assert stereo.shape == mask.shape == (2, 8) and mask[:, 5:].all() and not mask[:, :5].any()
    with pytest.raises(ValueError, match="num_samples must be a positive int"):
        pad_or_crop(x, 0)


def test_collate_audio():
    batch = [
        {"audio": torch.ones(5), "label": torch.tensor(1), "name": "a", "row": 0},
        {"audio": np.full(3, 0.5, np.float32), "label": torch.tensor(2), "name": "b", "row": 1},
        {"audio": torch.ones(4), "padding_mask": torch.tensor([False, False, True, True]), "label": torch.tensor(0),
         "name": "c", "row": 2},  # a mask may come with some items only
    ]
    out = collate_audio(batch)
    assert set(out) == {"audio", "padding_mask", "label", "name", "row"}
    assert out["audio"].shape == out["padding_mask"].shape == (3, 5) and out["audio"].dtype == torch.float32
    assert out["audio"][1].tolist() == [0.5, 0.5, 0.5, 0, 0]
    assert out["padding_mask"].tolist() == [[False] * 5, [False, False, False, True, True],
                                            [False, False, True, True, True]]
    assert out["label"].tolist() == [1, 2, 0] and out["name"] == ["a", "b", "c"] and out["row"] == [0, 1, 2]
    del batch[1]["row"]
    with pytest.raises(ValueError, match=r"batch item 1: expected a dict with the keys \['audio', 'label', 'name', "
                                         r"'row'\], got \['audio', 'label', 'name'\]"):
        collate_audio(batch)


def test_collate_audio_errors():
    with pytest.raises(ValueError, match="empty batch"):
        collate_audio([])
    with pytest.raises(ValueError, match=r"batch item 0: expected audio \[samples\], got \(2, 3\)"):
        collate_audio([{"audio": torch.zeros(2, 3)}])
    with pytest.raises(ValueError, match="padding_mask must be bool of shape"):
        collate_audio([{"audio": torch.zeros(3), "padding_mask": torch.zeros(3)}])
    with pytest.raises(ValueError, match=r"cannot stack 'emb'"):
        collate_audio([{"audio": torch.zeros(3), "emb": torch.zeros(2)}, {"audio": torch.zeros(3), "emb": torch.zeros(4)}])
    with pytest.raises(TypeError, match="int16/int32"):
        collate_audio([{"audio": torch.zeros(3, dtype=torch.int64)}])


def test_windows_feed_collate_and_model_shapes():
    windows = windows_from_array(tone(440, 48_000, 2.5), 48_000, window_s=1.0)
    batch = collate_audio([{"audio": w.audio, "padding_mask": w.padding_mask, "start_s": w.start_s} for w in windows])
    assert batch["audio"].shape == (3, 16_000) and batch["start_s"] == [0.0, 1.0, 2.0]
    assert batch["padding_mask"].sum(dim=1).tolist() == [0, 0, 8_000]


def test_public_names_exist():
    for module in (arrays, collate, decoding, folders, high_frequency, quality, resampling, wav_header):
        assert [name for name in module.__all__ if not hasattr(module, name)] == [], module.__name__


@pytest.mark.parametrize("samples, rate", [(16001, 32000), (12345, 32000), (16003, 32000), (7, 44100),
                                           (100003, 44100), (479999, 48000), (0, 22050), (1, 96000)])
def test_resampled_length_is_what_soxr_makes_whole_and_streamed(samples, rate):
    import soxr

    from avex_hub.audio.arrays import resampled_length

    whole = soxr.resample(np.zeros((samples, 1), np.float32), rate, 16000, quality="HQ").shape[0] if samples else 0
    stream = soxr.ResampleStream(rate, 16000, 1, dtype="float32", quality="HQ")
    zeros = np.zeros(samples, np.float32)
    streamed = sum(len(stream.resample_chunk(zeros[i:i + 5000])) for i in range(0, samples, 5000))
    streamed += len(stream.resample_chunk(np.zeros(0, np.float32), last=True))
    assert resampled_length(samples, rate) == whole == streamed
