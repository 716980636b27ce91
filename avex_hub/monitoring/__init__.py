"""From window scores to detections a monitoring programme can publish.

The flow, one module a step (each reads the rows of the step before; none reaches back into the model):

    times        when each recording started: GUANO, the AudioMoth comment, file names, a user pattern, else none
    deployments  folder or recorder -> site, latitude, longitude, dates, time zone
    recordings   one row per recording: start, duration, site, flags (the effort behind every presence table)
    scores       every asked label's score per window (a classify or detect output), with its provenance
    events       windows above a label's threshold merged into events; Raven selection tables of events
    review       clips stratified over score bins, with spectrograms and a sheet to fill
    calibration  a logistic model of "correct" on the score's logit, thresholds for a target precision
    presence     site x occasion tables (long, and the matrices R's unmarked reads)
    species      a species list checked against the label map

``avex-hub times | events | review | calibrate | presence`` run them from a shell (``avex_hub.cli.monitoring``).
"""

from .._lazy import lazy_modules

_MODULES = ("calibration", "deployments", "events", "presence", "recordings", "review", "scores", "species",
            "spectrogram", "synthetic", "tables", "times")
__getattr__, __dir__ = lazy_modules(__name__, _MODULES)
