"""The test suite runs the tutorials in ci mode: the tiny test checkpoint and synthetic data, no network.

nbval starts each notebook's kernel with this process's environment, so setting the variable here, before any
kernel starts, is what switches the notebooks. A value already set (the GPU workflow sets ``real``) wins.

Each notebook's run is also measured (wall time from its kernel's start to its last cell, the kernel's peak
resident memory, the load average before and after), and listed at the end of the test session. With
``AVEX_HUB_EXECUTED_NOTEBOOKS=DIR`` set, every notebook whose cells all passed is written to ``DIR`` with the
outputs nbval received, so the documentation build (``python docs/build.py --executed DIR``) shows this very run
instead of executing every notebook a second time.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

os.environ.setdefault("AVEX_HUB_TUTORIAL_MODE", "ci")

EXECUTED_VARIABLE = "AVEX_HUB_EXECUTED_NOTEBOOKS"
RUN_METADATA = "avex_hub_run"  # the executed copy's notebook metadata key: mode, seconds, peak memory, load


@dataclass
class NotebookRun:
    """What one notebook's cells gave under nbval."""

    path: Path
    started: float = field(default_factory=time.perf_counter)
    load_before: float = field(default_factory=lambda: os.getloadavg()[0])
    outputs: dict[int, list] = field(default_factory=dict)  # code cell number -> its outputs
    failed: bool = False
    seconds: float | None = None
    peak_rss_mib: float | None = None
    cpu_s: float | None = None
    load_after: float | None = None


_RUNS: dict[str, NotebookRun] = {}


def _is_cell(item) -> bool:
    return hasattr(item, "cell_num") and hasattr(item.parent, "nb")


def _run_of(item) -> NotebookRun:
    key = str(item.parent.path)
    if key not in _RUNS:
        _RUNS[key] = NotebookRun(Path(key))
    return _RUNS[key]


def _kernel_proc(collector, name: str) -> str | None:
    """``/proc/<pid>/<name>`` of the notebook's kernel process (Linux), or None where unknown."""
    process = getattr(getattr(getattr(collector.kernel, "km", None), "provisioner", None), "process", None)
    try:
        return Path(f"/proc/{process.pid}/{name}").read_text()
    except (AttributeError, OSError):
        return None


def _kernel_peak_rss_mib(collector) -> float | None:
    """The peak resident memory of the notebook's kernel process (VmHWM), or None where unknown."""
    status = _kernel_proc(collector, "status") or ""
    kib = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), None)
    return None if kib is None else kib / 1024


def _kernel_cpu_s(collector) -> float | None:
    """CPU seconds the kernel process and its finished children used (user + system): on a quiet machine, with
    one torch thread as the ci-mode notebooks use, about the wall time the notebook needs."""
    stat = _kernel_proc(collector, "stat")
    if stat is None:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after "pid (name)": state is field 3, utime field 14
    return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    if _is_cell(item):
        _run_of(item)  # the first cell's setup starts the kernel: the clock starts here


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    if not _is_cell(item):
        return
    report, run = outcome.get_result(), _run_of(item)
    if report.failed or report.skipped:
        run.failed = True
    if call.when == "call":
        run.outputs[item.cell_num] = list(getattr(item, "test_outputs", None) or [])


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item, nextitem):
    last = _is_cell(item) and (nextitem is None or getattr(nextitem, "parent", None) is not item.parent)
    if last:  # before the collector's teardown stops the kernel
        run = _run_of(item)
        run.seconds = time.perf_counter() - run.started
        run.peak_rss_mib = _kernel_peak_rss_mib(item.parent)
        run.cpu_s = _kernel_cpu_s(item.parent)
        run.load_after = os.getloadavg()[0]
    yield
    if last and os.environ.get(EXECUTED_VARIABLE):
        write_executed(item.parent.nb, _run_of(item), Path(os.environ[EXECUTED_VARIABLE]))


def write_executed(nb, run: NotebookRun, folder: Path) -> Path | None:
    """Write ``nb`` with the outputs of ``run`` to ``folder`` (same file name); nothing when a cell failed, was
    skipped or did not run, so a broken notebook can never reach the documentation site."""
    import nbformat

    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    if run.failed or sorted(run.outputs) != list(range(len(code))):
        return None
    executed = nbformat.from_dict(json.loads(json.dumps(nb)))  # a deep copy; the committed file stays as it is
    for number, cell in enumerate(c for c in executed.cells if c.cell_type == "code"):
        cell.execution_count = number + 1
        cell.outputs = [nbformat.from_dict(dict(output)) for output in run.outputs[number]]
        for output in cell.outputs:
            if output.output_type == "execute_result":
                output.execution_count = number + 1
    executed.metadata[RUN_METADATA] = {
        "mode": os.environ.get("AVEX_HUB_TUTORIAL_MODE"), "seconds": round(run.seconds or 0.0, 1),
        "peak_rss_mib": None if run.peak_rss_mib is None else round(run.peak_rss_mib),
        "cpu_s": None if run.cpu_s is None else round(run.cpu_s, 1),
        "load_average": [round(run.load_before, 1), round(run.load_after or 0.0, 1)]}
    nbformat.validate(executed)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / run.path.name
    nbformat.write(executed, target)
    return target


def pytest_terminal_summary(terminalreporter):
    if not _RUNS:
        return
    terminalreporter.section("notebooks: wall time (kernel start to last cell), kernel CPU time and peak memory, "
                             "load average")
    for run in _RUNS.values():
        memory = "?" if run.peak_rss_mib is None else f"{run.peak_rss_mib:.0f} MiB"
        cpu = "?" if run.cpu_s is None else f"{run.cpu_s:.0f} s"
        status = "FAILED" if run.failed else "ok"
        terminalreporter.write_line(f"{run.path.name}: {run.seconds or 0:.0f} s, CPU {cpu}, {memory}, load "
                                    f"{run.load_before:.1f} -> {run.load_after or 0:.1f} "
                                    f"({os.environ.get('AVEX_HUB_TUTORIAL_MODE')} mode, {status})")
