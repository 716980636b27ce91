"""The encoder on other runtimes: ONNX Runtime and OpenVINO give the rows PyTorch gives, one argument away.

    net = load_runtime(model, "onnxruntime", "int8")     # or ("openvino", "bf16"), ("torch", "fp32"), ...
    net.pooled_layers(audio, padding_mask, layers=[6, 12], pooling="mean")   # [B, 2, C], as AvexModel's
    net.logits(audio, padding_mask)                                            # [B, labels]

``runtime`` and ``precision`` pairs (:data:`RUNTIMES`): torch fp32/bf16/int8 (:mod:`avex_hub.encoder.precision`),
onnxruntime fp32/int8 (int8: the transformer layers' weight matrices quantised dynamically), openvino fp32/bf16
(bf16: OpenVINO's CPU plugin computes in bfloat16 on CPUs with bf16 units; fp32 is asked for explicitly, since that
plugin otherwise picks bf16 on such CPUs by itself). Other pairs are refused by name. The runtimes run on the CPU.

The graph each runs is :class:`avex_hub.encoder.onnx_graph.RunGraph` (the model's own filterbank and frame mask
in, the layers asked for pooled, and logits, out), exported once per weights and settings into the user cache
(:mod:`avex_hub.encoder.runtime_cache`) and checked against the PyTorch model when it is made: fp32 within
:data:`FP32_TOLERANCE` max|Δ|, bf16 and int8 by the pooled embedding's cosine (:data:`MIN_COSINE`). The accuracy
bounds of each pair against torch fp32 on real rows are tested in tests/test_runtimes.py.

``threads``: the threads the runtime computes with (default :func:`default_threads`: the cores this process may
use, less one per decoding worker, so the two do not compete for cores). onnxruntime and openvino are optional:
``pip install 'avex-hub[export]'`` (onnxruntime) or ``'avex-hub[openvino]'``.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import importlib.util
import os
import sys
from typing import Callable, Iterator

import numpy as np
import torch

from .onnx_graph import OPSET, RunGraph, example_audio, need, quantize_int8, read_metadata, write_graph
from .pipeline import Embeddings, TorchWindowModel, torch_model
from .precision import PRECISIONS, device_for
from .runtime_cache import cached_graph, tensors_digest

__all__ = ["RUNTIMES", "RUNTIME_EXTRAS", "FP32_TOLERANCE", "MIN_COSINE", "check_runtime", "default_threads",
           "load_runtime", "RuntimeModel", "window_model", "RuntimeWindowModel", "torch_threads"]

RUNTIMES = {"torch": PRECISIONS, "onnxruntime": ("fp32", "int8"), "openvino": ("fp32", "bf16")}
RUNTIME_EXTRAS = {"onnxruntime": ("onnxruntime", "export"), "openvino": ("openvino", "openvino")}  # module, extra
GRAPH_VERSION = 2  # raised when RunGraph changes what it computes: a new cache entry
FP32_TOLERANCE = 1e-3  # accepted max|Δ| to PyTorch of an fp32 graph when it is made (torch's FFT rounding: ~1e-4)
MIN_COSINE = {"bf16": 0.9999, "int8": 0.999}  # accepted pooled-embedding cosine to PyTorch fp32


def check_runtime(runtime: str, precision: str, device=None) -> None:
    """A ValueError for an unknown runtime, a precision it does not run or a device other than the CPU, an
    ImportError naming the extra when its package is missing."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {tuple(RUNTIMES)}, got {runtime!r}")
    if precision not in RUNTIMES[runtime]:
        others = [f"{r} {p}" for r, ps in RUNTIMES.items() for p in ps if p == precision]
        raise ValueError(f"runtime {runtime!r} runs precision {' or '.join(RUNTIMES[runtime])}, not {precision!r}"
                         + (f"; {precision} runs on {', '.join(others)}" if others else ""))
    if runtime == "torch":
        return
    if device not in (None, "auto") and torch.device(device).type != "cpu":  # "auto": the CPU, for these runtimes
        raise ValueError(f"runtime {runtime!r} runs on the CPU; use runtime='torch' on {device}")
    module, extra = RUNTIME_EXTRAS[runtime]
    for name in (module, "onnx"):
        if importlib.util.find_spec(name) is None:
            raise ImportError(f"runtime {runtime!r} needs {name}: pip install 'avex-hub[{extra}]'")
    if (runtime, precision) == ("openvino", "bf16") and not openvino_has_bf16():
        raise ValueError("runtime 'openvino' at precision 'bf16' needs a CPU with bf16 units, which this one lacks "
                         "(OpenVINO would run fp32); use precision 'fp32', or onnxruntime int8")


def openvino_has_bf16() -> bool:
    """Whether OpenVINO's CPU plugin computes bf16 on this CPU."""
    return "BF16" in need("openvino", "openvino").Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def default_threads(workers: int = 0) -> int:
    """Compute threads for a runtime: the cores this process may use (its CPU affinity, else all), less one per
    decoding worker, at least 1; torch's own setting when it is lower (``OMP_NUM_THREADS``, ``set_num_threads``)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores - max(0, workers), torch.get_num_threads()))


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """torch's compute threads set to ``threads`` for the block and restored after (``None``: left as they are);
    the thread control of ``runtime="torch"``."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def load_runtime(model, runtime: str = "torch", precision: str = "fp32", *, device=None, threads: int | None = None,
                 cache: str | os.PathLike | None = None, notify: Callable[[str], None] | None = None):
    """What runs ``model`` at ``precision`` on ``runtime``: for torch the model prepared as
    :func:`~avex_hub.encoder.precision.prepare_for_inference` does, else a :class:`RuntimeModel`.
    ``device=None`` runs where the model (or tensor) already is, and on the CPU for anything on no device."""
    from .precision import prepare_for_inference

    check_runtime(runtime, precision, device)
    if runtime == "torch":
        return prepare_for_inference(model, precision, None if device == "auto" else device)
    return RuntimeModel(model, runtime, precision, threads=threads, cache=cache, notify=notify)


class RuntimeModel:
    """``model`` run by onnxruntime or openvino: :meth:`pooled_layers` and :meth:`logits` as ``AvexModel``'s
    (float32 CPU tensors out). One session per (layers, pooling) asked for, made on first use; the model's
    metadata (name, labels, preprocessing, ...) is the model's own."""

    def __init__(self, model, runtime: str, precision: str, *, threads: int | None = None,
                 cache: str | os.PathLike | None = None, notify: Callable[[str], None] | None = None) -> None:
        check_runtime(runtime, precision, "cpu")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ValueError(f"threads must be a positive int or None, got {threads!r}")
        # the caller's model stays where it is: on another device, the runtime gets a CPU copy
        self.model = (model if device_for(model).type == "cpu" else copy.deepcopy(model).cpu()).eval()
        self.runtime, self.precision = runtime, precision
        self.threads = threads or default_threads()
        self.cache, self.notify = cache, notify
        self._digest: str | None = None
        self.sessions: dict[tuple, OnnxRuntimeSession | OpenVinoSession] = {}  # (layers, pooling, logits) ->

    # -- the model's own facts --------------------------------------------------------------------------------
    def __getattr__(self, name: str):
        if name in ("name", "weights_sha256", "sample_rate", "labels", "label_map", "preprocessing", "config",
                    "num_layers", "embedding_dim", "classifier", "layer_indices", "pool"):
            return getattr(self.__dict__["model"], name)
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def __repr__(self) -> str:
        return f"RuntimeModel({self.model.name!r}, runtime={self.runtime!r}, precision={self.precision!r}, " \
               f"threads={self.threads})"

    # -- the runs ---------------------------------------------------------------------------------------------
    def pooled_layers(self, audio: torch.Tensor, padding_mask: torch.Tensor | None = None, *,
                      layers: int | list[int] | str = "last", pooling: str = "mean") -> torch.Tensor:
        """``[B, L, C]``: each of ``layers`` pooled by ``pooling`` over the frames that are not padding."""
        self.model.pool(torch.zeros(1, 1, 1), None, pooling)  # the model's own check of the pooling
        return self._run(audio, padding_mask, tuple(self.model.layer_indices(layers)), pooling)["embeddings"]

    def logits(self, audio: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Species logits ``[B, labels]``."""
        if self.model.classifier is None:
            raise ValueError(f"{self.model.name} is an encoder without a species head; use embed() or a probe")
        return self._run(audio, padding_mask, (self.model.num_layers,), "mean", logits=True)["logits"]

    def session(self, layers: list[int], pooling: str = "mean", logits: bool = False):
        """The session of these outputs, made (and its graph exported) on first use."""
        key = (tuple(layers), pooling, logits)
        if key not in self.sessions:
            self.sessions[key] = SESSIONS[self.runtime](self.graph_file(list(layers), pooling, logits), self.precision,
                                                        self.threads)
        return self.sessions[key]

    def _run(self, audio, padding_mask, layers: tuple, pooling: str, logits: bool = False) -> dict:
        session = self.session(list(layers), pooling, logits)
        fbank, frame_mask = self.graph_inputs(audio, padding_mask)
        out = session(fbank.numpy(), frame_mask.numpy())
        return {name: torch.from_numpy(np.ascontiguousarray(value)) for name, value in out.items()}

    def graph_inputs(self, audio: torch.Tensor, padding_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """What the graph takes: ``AvexModel.encoder_inputs`` (the checked audio's filterbank, the model's own, and
        its frame padding mask, all False without one), in float32 on the CPU."""
        # float32 whatever the caller's autocast says; no_grad, not inference_mode: a new graph is traced on these
        with torch.no_grad(), torch.autocast("cpu", enabled=False):
            fbank, frame_mask = self.model.encoder_inputs(audio.detach().cpu().float(),
                                                         None if padding_mask is None else padding_mask.cpu())
        return fbank, torch.zeros(fbank.shape[:2], dtype=torch.bool) if frame_mask is None else frame_mask

    def graph_file(self, layers: list[int], pooling: str = "mean", logits: bool = False):
        """The verified cached graph for these outputs (exported now if it is not there)."""
        form = "int8" if self.precision == "int8" else "fp32"
        if self._digest is None:
            self._digest = tensors_digest(self.model)
        identity = graph_identity(self.model, self._digest, layers, pooling, logits, form)

        def build(path):
            graph = RunGraph(self.model, layers, pooling, logits=logits)
            example = self.graph_inputs(*_check_audio(self.model.sample_rate))
            with torch.autocast("cpu", enabled=False):  # the graph's own numbers, not the caller's autocast
                write_graph(graph, path, {"identity": identity}, example, opset=OPSET, name=self.model.name)
            if form == "int8":
                quantize_int8(path, max(layers))
            self._check(path, graph)

        what = f"{self.model.name} ({form}, layers {layers}, {pooling}{', logits' if logits else ''})"
        return cached_graph(identity, build, read_metadata, what=what, folder=self.cache, notify=self.notify)

    def _check(self, path, graph: RunGraph) -> None:
        """The new file, run by this runtime at this precision, against the PyTorch graph (module doc)."""
        from .onnx_graph import GraphExportError

        audio, mask = _check_audio(self.model.sample_rate)
        form = "int8" if self.precision == "int8" else "fp32"  # the file's own numbers: bf16 is a compute hint
        run = SESSIONS[self.runtime](path, form, self.threads)
        got = run(*(x.numpy() for x in self.graph_inputs(audio, mask)))
        with torch.inference_mode(), torch.autocast("cpu", enabled=False):  # PyTorch fp32 itself
            expected = {"embeddings": self.model.pooled_layers(audio, mask, layers=graph.layers, pooling=graph.pooling)}
            if graph.logits:
                expected["logits"] = self.model.logits(audio, mask)
        if form == "fp32":
            worst = {k: float(np.abs(got[k] - expected[k].numpy()).max()) for k in expected}
            if not max(worst.values()) <= FP32_TOLERANCE:
                raise GraphExportError(f"the {self.runtime} graph differs from PyTorch by {worst} (max|Δ|), more "
                                       f"than {FP32_TOLERANCE}")
            return
        ours, theirs = torch.from_numpy(got["embeddings"]).flatten(1), expected["embeddings"].flatten(1)
        cosine = float(torch.nn.functional.cosine_similarity(ours, theirs).min())
        if not cosine >= MIN_COSINE[form]:
            raise GraphExportError(f"the {self.runtime} {form} graph's pooled embedding has cosine {cosine:.5f} to "
                                   f"PyTorch fp32, below {MIN_COSINE[form]}")


def window_model(model, output, *, runtime: str = "torch", precision: str = "fp32", device=None,
                 threads: int | None = None, cache: str | os.PathLike | None = None,
                 notify: Callable[[str], None] | None = None):
    """``model`` as the pipeline's :class:`~avex_hub.encoder.pipeline.WindowModel` giving ``output``, run by
    ``runtime`` at ``precision``: :func:`~avex_hub.encoder.pipeline.torch_model` for torch, else a
    :class:`RuntimeWindowModel` whose graph is exported (or found in the cache) and loaded now, so a missing package,
    a refused pair or a failed export stops the run before any audio is read."""
    check_runtime(runtime, precision, device)
    if runtime == "torch":
        return torch_model(model, output, precision=precision, device=None if device == "auto" else device)
    torch_model(model, output, device="cpu")  # the same checks of layers, pooling and the species head
    net = RuntimeModel(model, runtime, precision, threads=threads, cache=cache, notify=notify)
    if isinstance(output, Embeddings):
        net.session(model.layer_indices(list(output.layers)), output.pooling)
    else:
        net.session([model.num_layers], "mean", logits=True)
    return RuntimeWindowModel(net, output)


class RuntimeWindowModel(TorchWindowModel):
    """The pipeline's call (a window batch in, ``"scores"`` or ``"embeddings"`` rows out) of a
    :class:`RuntimeModel`: :class:`~avex_hub.encoder.pipeline.TorchWindowModel`'s own ``run`` on a model that
    computes in another runtime (the autocast it would enter is ignored: the runtime's precision is its own)."""

    def __init__(self, net: RuntimeModel, output) -> None:  # TorchWindowModel's preparation is torch's, not ours
        self.net, self.output, self.precision, self.device = net, output, "fp32", torch.device("cpu")


def _check_audio(sample_rate: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two 4 s clips, the second padded after 2.5 s: what a new graph is traced on and checked with."""
    audio = example_audio(((2, 4.0),), sample_rate, seed=1)[0]
    mask = torch.arange(audio.shape[1]).expand_as(audio) >= torch.tensor([[audio.shape[1]], [round(2.5 * sample_rate)]])
    return audio.masked_fill(mask, 0.0), mask


def graph_identity(model, digest: str, layers: list[int], pooling: str, logits: bool, form: str) -> dict:
    """Everything that decides a cached graph's numbers (see :mod:`avex_hub.encoder.runtime_cache`)."""
    from .._version import __version__

    versions = {"avex_hub": __version__, "torch": torch.__version__}
    for module in ("onnx", "onnxruntime") if form == "int8" else ("onnx",):
        versions[module] = importlib.import_module(module).__version__
    return {"format": "avex_hub.run_graph", "graph_version": GRAPH_VERSION, "tensors_sha256": digest,
            "model": model.name, "weights_sha256": model.weights_sha256, "config": model.config.to_dict(),
            "preprocessing": model.preprocessing.to_dict(), "layers": list(layers), "pooling": pooling,
            "logits": logits, "form": form, "opset": OPSET, "versions": versions}


class OnnxRuntimeSession:
    """An onnxruntime session of a graph file on the CPU with ``threads`` compute threads; called with the graph's
    inputs in order (arrays), returns its outputs by name."""

    def __init__(self, path, precision: str, threads: int) -> None:
        ort = need("onnxruntime", "export")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.names = [o.name for o in self.session.get_outputs()]

    @property
    def threads(self) -> int:
        return self.session.get_session_options().intra_op_num_threads

    def __call__(self, *inputs: np.ndarray) -> dict:
        return dict(zip(self.names, self.session.run(self.names, dict(zip(self.inputs, inputs)))))


class _SignalStack(ctypes.Structure):  # stack_t of sigaltstack(2) on Linux
    _fields_ = [("sp", ctypes.c_void_p), ("flags", ctypes.c_int), ("size", ctypes.c_size_t)]


@contextlib.contextmanager
def kept_signal_stack() -> Iterator[None]:
    """The calling thread's alternate signal stack as it was before the block, also when the block raised.

    OpenVINO's CPU plugin installs a stack of its own on a thread that compiles or infers and frees it later, possibly
    from another thread, leaving the caller's thread pointing at freed memory. Python installs every signal handler
    with SA_ONSTACK, so the next handled signal on that thread (SIGCHLD from an exiting subprocess or decoding worker
    once a DataLoader with workers has run, SIGINT on Ctrl-C) could not be delivered and the process died of SIGSEGV
    (faulthandler's own stack, replaced by the plugin's, was lost too). Only Linux is known to need it."""
    if not sys.platform.startswith("linux"):
        yield
        return
    libc = ctypes.CDLL(None, use_errno=True)
    before = _SignalStack()
    libc.sigaltstack(None, ctypes.byref(before))
    try:
        yield
    finally:
        libc.sigaltstack(ctypes.byref(before), None)


class OpenVinoSession:
    """An OpenVINO CPU model of a graph file: ``precision`` "fp32" compiles with an explicit f32 precision hint
    (the CPU plugin's default on CPUs with bf16 units is bf16), "bf16" with the bf16 hint; ``threads`` compute
    threads; one stream (one request at a time, all threads on it). Called as :class:`OnnxRuntimeSession`."""

    def __init__(self, path, precision: str, threads: int) -> None:
        self.core = core = need("openvino", "openvino").Core()  # kept as long as what it compiled
        config = {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
                  "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
        graph = core.read_model(str(path))
        self.inputs = [i.get_any_name() for i in graph.inputs]
        self.names = [o.get_any_name() for o in graph.outputs]  # the compiled model renames them; the order holds
        with kept_signal_stack():
            self.compiled = core.compile_model(graph, "CPU", config)
            self.request = self.compiled.create_infer_request()

    @property
    def threads(self) -> int:
        return int(self.compiled.get_property("INFERENCE_NUM_THREADS"))

    @property
    def precision_hint(self) -> str:
        return self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()

    def __call__(self, *inputs: np.ndarray) -> dict:
        with kept_signal_stack():
            result = self.request.infer(dict(zip(self.inputs, inputs)))
        return {name: np.array(result[self.compiled.output(i)]) for i, name in enumerate(self.names)}


SESSIONS = {"onnxruntime": OnnxRuntimeSession, "openvino": OpenVinoSession}
