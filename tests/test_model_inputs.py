"""Model input that used to fail in the wrong way (issue 26): a sample rate of 0, a bytes object taken for a path, an
[N, 2] array taken for N channels of 2 samples, and the "more than 8 kHz" warning on audio with next to no energy.
Each case failed on the code before the recording pipeline checked it."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import soundfile as sf

from avex_hub.audio.decoding import load_audio
from avex_hub.audio.high_frequency import HighFrequencyContentWarning, HighFrequencyMeter
from avex_hub.audio.windows import stream_windows
from conftest import tones


@pytest.mark.parametrize("rate", [0, -16000, 0.5, float("nan")])
def test_a_sample_rate_that_is_not_a_positive_whole_number_is_refused(tiny_model, rate):
    audio = np.zeros(16000, np.float32)
    with pytest.raises(ValueError, match=r"sample_rate must be a positive whole number of Hz \(e.g. 48000\)"):
        tiny_model.predict(audio, rate)
    with pytest.raises(ValueError, match=r"sample_rate must be a positive whole number"):
        tiny_model.embed(audio, sample_rate=rate)


def test_bytes_are_not_taken_for_a_path(tiny_model, tmp_path):
    path = tmp_path / "clip.wav"
    sf.write(path, np.zeros(65536 // 2, np.float32), 16000, subtype="PCM_16")
    raw = path.read_bytes()
    with pytest.raises(TypeError, match=rf"got {len(raw)} bytes\. For a file's contents held in memory, decode "
                                        r"them first: data, rate = soundfile.read\(io.BytesIO\(raw\)\)"):
        tiny_model.predict(raw)
    with pytest.raises(TypeError, match=r"pass os.fsdecode\(name\)"):
        tiny_model.embed(bytes(path), sample_rate=16000)


@pytest.mark.parametrize("channels", ["mix", "all", 0])
def test_samples_by_channels_get_a_hint_to_transpose_before_any_warning(tiny_model, channels):
    stereo = tones(1.0, 48000, channels=2)  # [samples, channels]: soundfile's layout
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ValueError, match=r"got shape \(48000, 2\): 48000 channels of 2 samples each\. This looks "
                                             r"like \[samples, channels\] .* pass the transpose \(x\.T\)"):
            tiny_model.predict(stereo, 48000, channels=channels)
    assert caught == []  # before: one warning per "channel" first (48000 of them with channels="all")
    answer = tiny_model.predict(stereo.T, 48000, channels="all")  # the transpose is two channels of 1 s
    assert len(answer) == 2


def quiet_noise(seconds: float, rate: int, dbfs: float) -> np.ndarray:
    """White noise at ``dbfs`` RMS: most of its energy lies above 8 kHz at rates over 16 kHz."""
    noise = np.random.default_rng(3).standard_normal(round(seconds * rate))
    return (noise * 10 ** (dbfs / 20)).astype(np.float32)


def high_frequency_warnings(call) -> list:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        call()
    return [w for w in caught if issubclass(w.category, HighFrequencyContentWarning)]


def test_the_high_frequency_warning_needs_energy_above_the_silence_level(tmp_path):
    silent_mp3, tiny_wav, loud = tmp_path / "silent.mp3", tmp_path / "tiny.wav", tmp_path / "loud.wav"
    sf.write(silent_mp3, quiet_noise(2.0, 44100, -90.0), 44100, format="MP3")  # codec noise in a near-silent file
    sf.write(tiny_wav, quiet_noise(40 / 48000, 48000, -70.0), 48000, subtype="FLOAT")  # 40 samples, too short
    sf.write(loud, quiet_noise(2.0, 44100, -30.0), 44100, subtype="FLOAT")
    for path in (silent_mp3, tiny_wav):
        assert load_audio(path).flags[0].silent
        assert high_frequency_warnings(lambda: load_audio(path)) == []
        assert high_frequency_warnings(lambda: list(stream_windows(path))) == []
    assert load_audio(tiny_wav).flags[0].too_short
    # the same share of a real signal still warns, whole or streamed
    assert len(high_frequency_warnings(lambda: load_audio(loud))) == 1
    assert len(high_frequency_warnings(lambda: list(stream_windows(loud)))) == 1
    meter = HighFrequencyMeter(44100)
    meter.add(quiet_noise(2.0, 44100, -30.0)[None])
    assert meter.fraction > 0.5 and meter.above_db == pytest.approx(-30 + 10 * np.log10(meter.fraction), abs=0.5)
