"""Labelling in a notebook: an ipywidgets form over search hits that stores the choices in the archive."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from .archive import Archive
from .labels import add_labels
from .search import Hit, report_missing_audio
from .store import audio_path


def label_widget(archive: Archive, hits: Sequence[Hit], label: str, *, audio: bool = True):
    """An ipywidgets form: one row per hit (file, time, score, a player) with positive/negative/skip buttons and a
    "Save labels" button that stores the choices in the archive. Returns the widget; ``widget.choices`` holds
    the toggles (set their ``value`` from code to label without clicking) and ``widget.save()`` saves.
    A hit whose audio is no longer where it was indexed says so in its row (no player); the notice names the
    files and how to prune them."""
    import html

    import ipywidgets as widgets

    foreign = sorted({h.archive_id for h in hits if h.archive_id and h.archive_id != archive.identity})
    if foreign:
        raise ValueError(f"hits from archive {foreign[0]}, not from {archive.path} ({archive.identity}): label "
                         "hits of the archive they are saved in")
    missing = set(report_missing_audio(archive, [h.file for h in hits], "hits"))
    rows, choices = [], []
    for h in hits:
        toggle = widgets.ToggleButtons(options=["skip", "positive", "negative"], value="skip",
                                       style={"button_width": "70px"})
        gone = " <b>(audio missing)</b>" if h.file in missing else ""
        parts = [widgets.HTML(f"<code>{html.escape(Path(h.file).name)}</code> {h.start_s:.1f}-{h.end_s:.1f} s "
                              f"ch {h.channel} score {h.score:.3f}{gone}"), toggle]
        if audio and not gone:
            parts.insert(1, widgets.Audio(value=_wav_bytes(h), format="wav", autoplay=False, loop=False))
        rows.append(widgets.HBox(parts))
        choices.append(toggle)
    status = widgets.HTML("")
    button = widgets.Button(description="Save labels", button_style="primary")
    box = widgets.VBox([widgets.HTML(f"<b>Label: {label}</b>"), *rows, widgets.HBox([button, status])])

    def save(_=None) -> int:
        picked = [(h.window_id, label, t.value) for h, t in zip(hits, choices) if t.value != "skip"]
        count = add_labels(archive, picked, provenance="avex-hub widget")
        status.value = f"saved {count} labels"
        return count

    button.on_click(save)
    box.choices, box.save = choices, save
    return box


def _wav_bytes(hit: Hit) -> bytes:
    import io

    import soundfile as sf

    from ...audio.decoding import load_audio

    clip = load_audio(audio_path(hit.file), channels="mix" if hit.channel < 0 else hit.channel, start_s=hit.start_s,
                      end_s=hit.end_s)
    wave = clip.waveform[0].numpy()
    buffer = io.BytesIO()
    sf.write(buffer, wave, clip.sample_rate, format="WAV")
    return buffer.getvalue()
