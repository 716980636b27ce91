"""Recording -> windows -> batches -> a model -> rows, written once. Every path that runs recordings through a model
(``AvexModel.predict``/``embed`` on recordings, the file pipelines behind ``avex-hub classify|embed``, Lightning
prediction, the agile archive, its hoplite adapter and search's queries) takes its batches from
:mod:`avex_hub.audio.batches` through :func:`run_batches`.

The model is an argument. What the pipeline asks of it is the :class:`WindowModel` call: a
:class:`~avex_hub.audio.batches.WindowBatch` in, named float32 numpy arrays out, one row per window of the batch:

- ``"scores"`` ``[b, labels]``: sigmoid probabilities of the species head (the output :class:`Scores`);
- ``"embeddings"`` ``[b, L, C]``: the layers asked for, each pooled over the frames that are not padding (the
  output :class:`Embeddings`).

:func:`torch_model` makes that call of an ``AvexModel`` at a precision on a device. An ONNX Runtime or OpenVINO
session, or a remote actor holding a model, is another implementation of the same call and runs through the same
:func:`run_batches`; nothing else in the pipeline knows what the model is::

    run = torch_model(model, Embeddings(layers=(12,)), precision="bf16")
    rows = Rows()
    for item in run_batches(run, batch_windows(file_windows(paths), batch_size=2)):
        if isinstance(item, FileEnd):
            table = rows.take(item.file)        # that file's rows (or item.error: it failed)
        else:
            rows.add(item)                      # item.batch, item.outputs["embeddings"]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator, Protocol, Union

import numpy as np
import torch

from ..audio.batches import FileEnd, WindowBatch
from .precision import device_for, inference_context, prepare_for_inference

__all__ = ["Scores", "Embeddings", "WindowModel", "TorchWindowModel", "torch_model", "BatchOutputs", "run_batches",
           "Rows"]


@dataclass(frozen=True)
class Scores:
    """Ask the model for ``"scores"`` ``[b, labels]``: the species head's sigmoid probabilities."""


@dataclass(frozen=True)
class Embeddings:
    """Ask the model for ``"embeddings"`` ``[b, len(layers), C]``: ``layers`` (indices in ``0..num_layers``) each
    pooled over the frames that are not padding, by ``pooling`` (``"mean"`` or ``"max"``)."""

    layers: tuple[int, ...]
    pooling: str = "mean"


Output = Union[Scores, Embeddings]


class WindowModel(Protocol):
    """What the pipeline needs of a model: ``model(batch)`` -> ``{"scores": [b, labels]}`` or
    ``{"embeddings": [b, L, C]}``, float32 numpy arrays with one row per window of ``batch`` (see the module
    docstring). ``batch.audio`` is 16 kHz float audio, ``batch.padding_mask`` marks its padding."""

    def __call__(self, batch: WindowBatch) -> dict[str, np.ndarray]: ...


class TorchWindowModel:
    """The :class:`WindowModel` call of a torch model (an ``AvexModel``: ``logits`` and ``pooled_layers``), run at
    ``precision`` on ``device`` under inference mode. Make it with :func:`torch_model`."""

    def __init__(self, module: torch.nn.Module, output: Output, precision: str, device: torch.device) -> None:
        self.output, self.precision, self.device = output, precision, device
        self.net = prepare_for_inference(module, precision, device)  # int8: a quantised copy

    def __call__(self, batch: WindowBatch) -> dict[str, np.ndarray]:
        return self.run(batch.audio, batch.padding_mask)

    def run(self, audio: torch.Tensor, padding_mask: torch.Tensor | None = None) -> dict[str, np.ndarray]:
        """The same call on a batch's two tensors (a collated batch of clips): 16 kHz ``audio`` ``[b, S]`` and
        its ``padding_mask`` (True = padding, or None)."""
        audio = audio.to(self.device, non_blocking=True)
        # A batch without padding runs without a mask: the same numbers, without masking every attention map.
        padded = padding_mask is not None and bool(padding_mask.any())
        mask = padding_mask.to(self.device, non_blocking=True) if padded else None
        with inference_context(self.precision, self.device):
            if isinstance(self.output, Embeddings):
                pooled = self.net.pooled_layers(audio, mask, layers=list(self.output.layers),
                                                pooling=self.output.pooling)
                return {"embeddings": pooled.float().cpu().numpy()}
            return {"scores": torch.sigmoid(self.net.logits(audio, mask).float()).cpu().numpy()}


def torch_model(module: torch.nn.Module, output: Output, *, precision: str = "fp32",
                device=None) -> TorchWindowModel:
    """``module`` as a :class:`WindowModel` giving ``output``. Layers and pooling are checked now (a wrong one is a
    ValueError before any audio is read), and so is the species head for :class:`Scores`. ``device=None`` runs
    where the model (or tensor) already is, and on the CPU for anything on no device."""
    if isinstance(output, Embeddings):
        module.layer_indices(list(output.layers))
        module.pool(torch.zeros(1, 1, 1), None, output.pooling)
    elif getattr(module, "classifier", None) is None:
        raise ValueError(f"{getattr(module, 'name', 'the model')} has no species head to score with; use "
                         "embeddings (or a probe)")
    return TorchWindowModel(module, output, precision, device_for(module, device))


@dataclass
class BatchOutputs:
    """A batch and what the model gave for it (``outputs``: name -> array with one row per window)."""

    batch: WindowBatch
    outputs: dict[str, np.ndarray]


def run_batches(model: WindowModel, batches: Iterable[WindowBatch | FileEnd]) -> Iterator[BatchOutputs | FileEnd]:
    """Each batch through ``model``, in order: a :class:`BatchOutputs` per batch, and every
    :class:`~avex_hub.audio.batches.FileEnd` passed on where it stands. ValueError when the model returns a number
    of rows other than the batch's windows."""
    for item in batches:
        if isinstance(item, FileEnd):
            yield item
            continue
        outputs = model(item)
        wrong = {name: tuple(np.shape(value)) for name, value in outputs.items() if len(value) != len(item)}
        if wrong:
            raise ValueError(f"the model returned {wrong} for a batch of {len(item)} windows; expected one row "
                             "per window")
        yield BatchOutputs(item, outputs)


class Rows:
    """Each recording's rows, gathered as its batches come back: :meth:`add` every :class:`BatchOutputs`, then
    :meth:`take` a recording's rows when its ``FileEnd`` arrives. Rows are in the order the windows came (time,
    then channel): ``channel``, ``start_s``, ``end_s``, ``index``, ``flags`` and every output."""

    FIELDS = ("channel", "start_s", "end_s", "index", "flags")

    def __init__(self) -> None:
        self.parts: dict[int, list[dict[str, np.ndarray]]] = {}

    def add(self, done: BatchOutputs) -> None:
        batch = done.batch
        columns = {**{name: getattr(batch, name).numpy() for name in self.FIELDS}, **done.outputs}
        files = batch.file.numpy()
        for file in np.unique(files):
            rows = files == file
            self.parts.setdefault(int(file), []).append({k: v[rows] for k, v in columns.items()})

    def take(self, file: int) -> dict[str, np.ndarray]:
        """The rows of recording ``file`` (an empty dict when it had none), forgotten here."""
        parts = self.parts.pop(file, [])
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else {}
