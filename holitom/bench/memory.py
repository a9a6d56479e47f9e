"""Peak memory of one benchmark row, measured in a fresh child process.

Why a child process: in the benchmark's own process the rows share loaded
models, glibc keeps freed heap pages, and onnxruntime's CPU arena keeps the
largest activation buffers it ever needed, so "memory during this row's run"
is not separable there. A fresh process per row answers the question a
deployment asks: how much memory does it take to load this model on this
backend and answer one question?

What is measured (CPU), in bytes of resident memory (RSS):

- ``base``: after importing the code the row runs (torch, the tokenizer,
  the holitom runtime; plus transformers' model classes for the baseline row
  and onnxruntime for onnxruntime rows), before loading anything, so library
  code is excluded alike for every backend;
- ``loaded``: after the row's model / sessions are loaded and activated
  (freed heap returned to the OS with ``malloc_trim`` first);
- ``peak``: the kernel's high-water mark (``VmHWM``) over one run of the row,
  reset right before the run by writing ``5`` to ``/proc/self/clear_refs``
  (Linux >= 4.0). The kernel tracks it exactly, with no sampling. Where that
  file is not writable, a thread samples RSS every millisecond instead
  (``method: "sampled"``; short spikes can be missed).

Reported: ``peak_mb = peak - base``, the row's footprint while answering
(weights + activations + KV cache + runtime buffers; the ratio column of the
report uses it); ``loaded_mb = loaded - base``; ``param_mb``, the bytes of
the weights the row runs with (unique model parameters; for onnxruntime the
export's graph files, where each session holds its own copy). ``loaded_mb``
is NOT the weights: safetensors checkpoints are memory-mapped and a loader
that keeps the mapped tensors (transformers, and ours when no dtype cast is
needed) has them resident only once a run reads them, so they show up in
the peak, not in ``loaded``. Loading transients (a state dict and the model
both alive for a moment) are excluded on purpose: the peak is reset after
loading.

On CUDA the same child also reports torch's allocator peak
(``torch.cuda.max_memory_allocated``) over the run, weights included; memory
that onnxruntime's CUDA provider allocates is invisible to torch, so for
onnxruntime rows on CUDA only the CPU numbers are given.

Run as ``python -m holitom.bench.memory REQUEST.json RESULT.json`` by
:func:`measure_row_memory`; nothing else should need to call it.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from holitom.errors import BackendError

MB = 1024 * 1024
_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_bytes(field: str) -> int | None:
    """A ``VmXXX`` line of /proc/self/status in bytes, or None where /proc is unavailable."""
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024  # the kernel reports kB
    except OSError:
        return None
    return None


def current_rss() -> int:
    rss = _status_bytes("VmRSS")
    if rss is not None:
        return rss
    import psutil

    return psutil.Process().memory_info().rss


def release_free_heap() -> None:
    """Collect garbage and hand glibc's free heap pages back to the OS, so RSS reflects live memory."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, musl): RSS then also counts free heap
        pass


class PeakRSS:
    """Peak RSS over a ``with`` block: the kernel's VmHWM when resettable, else a 1 ms sampling thread."""

    def __init__(self) -> None:
        self.method = ""
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "PeakRSS":
        try:
            _CLEAR_REFS.write_text("5")  # resets VmHWM to the current RSS
            self.method = "vmhwm"
        except OSError:
            self.method = "sampled"
            self.peak = current_rss()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, current_rss())
            time.sleep(0.001)

    def __exit__(self, *exc) -> None:
        if self.method == "vmhwm":
            self.peak = _status_bytes("VmHWM") or 0
        else:
            self._stop.set()
            if self._thread is not None:
                self._thread.join()
            self.peak = max(self.peak, current_rss())


@dataclass(frozen=True)
class RowMemory:
    """One row's memory, in MiB (see the module docstring for the definitions)."""

    method: str
    base_mb: float
    loaded_mb: float
    peak_mb: float
    param_mb: float
    process_peak_mb: float
    gpu_peak_allocated_mb: float | None
    gpu_weights_allocated_mb: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure_row_memory(request: dict[str, Any], timeout_s: float = 1800.0) -> RowMemory:
    """Run one row once in a fresh interpreter and return its memory.

    ``request`` is the JSON-ready description :func:`holitom.bench.runner` builds
    (checkpoint or export folder, row, video, prompt, frames, device, dtype).
    """
    import tempfile

    with tempfile.TemporaryDirectory(prefix="holitom-bench-mem-") as tmp:
        req_path, res_path = Path(tmp) / "request.json", Path(tmp) / "result.json"
        req_path.write_text(json.dumps(request))
        proc = subprocess.run(
            [sys.executable, "-m", "holitom.bench.memory", str(req_path), str(res_path)],
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
        if proc.returncode != 0 or not res_path.is_file():
            tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
            if proc.returncode == -9:
                tail = "killed by SIGKILL, most likely out of memory" + (f"; {tail}" if tail else "")
            raise BackendError(
                f"the memory probe for row '{request['row']['id']}' failed (exit {proc.returncode}): {tail}; "
                "rerun with --no-memory to skip memory measurement."
            )
        return RowMemory(**json.loads(res_path.read_text()))


def _probe(request: dict[str, Any]) -> RowMemory:
    # The code the row runs is imported before the base reading, so that only
    # the row's own memory (weights, sessions, caches, activations) lies above
    # it, for every backend alike: library code is not what HoliTom changes.
    import torch
    from transformers import AutoTokenizer  # noqa: F401 - every row loads the tokenizer

    import holitom.merge  # noqa: F401
    import holitom.models.loading  # noqa: F401
    import holitom.runtime.backends.torch.loader  # noqa: F401
    import holitom.runtime.pipeline  # noqa: F401
    import holitom.video.preprocess  # noqa: F401
    from holitom.bench.config import TRANSFORMERS, BenchConfig, RowSpec
    from holitom.bench.subjects import BenchSession

    row = RowSpec(**{k: v for k, v in request["row"].items() if k != "id"})
    if row.backend == TRANSFORMERS:
        import transformers

        import holitom.models.baseline  # noqa: F401

        transformers.LlavaOnevisionForConditionalGeneration  # noqa: B018 - resolves transformers' lazy module now
    elif row.backend == "onnxruntime":
        import onnxruntime  # noqa: F401

        import holitom.runtime.backends.onnxruntime.loader  # noqa: F401
    config = BenchConfig(**request["config"])
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    cuda = config.device.startswith("cuda")
    release_free_heap()
    base = current_rss()
    session = BenchSession(config, Path(request["checkpoint"]), Path(request["video"]), export_dir=request.get("export_dir"))
    subject = session.subject(row)
    params = session.param_bytes(row)
    release_free_heap()
    loaded = current_rss()
    gpu_loaded = None
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        gpu_loaded = torch.cuda.memory_allocated()
    with PeakRSS() as peak:
        subject.run()
    gpu_peak = None
    if cuda and row.backend != "onnxruntime":
        torch.cuda.synchronize()
        gpu_peak = torch.cuda.max_memory_allocated()
    session.close()
    return RowMemory(
        method=peak.method,
        base_mb=base / MB,
        loaded_mb=(loaded - base) / MB,
        peak_mb=(peak.peak - base) / MB,
        param_mb=params / MB,
        process_peak_mb=peak.peak / MB,
        gpu_peak_allocated_mb=None if gpu_peak is None else gpu_peak / MB,
        gpu_weights_allocated_mb=None if (gpu_loaded is None or gpu_peak is None) else gpu_loaded / MB,
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m holitom.bench.memory REQUEST.json RESULT.json", file=sys.stderr)
        return 2
    request = json.loads(Path(argv[0]).read_text())
    result = _probe(request)
    Path(argv[1]).write_text(json.dumps(result.to_dict()))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main())
