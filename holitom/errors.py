"""Typed exceptions raised at the toolkit's edges.

Every message says what was received, what was expected and how to fix it.
The CLI prints ``str(exc)`` of any :class:`HolitomError` on one line and exits 2,
so messages must be complete sentences without relying on a traceback.
Never use ``assert`` for user input: ``python -O`` strips it.
"""

from __future__ import annotations

import signal
import sys
import warnings
from contextlib import contextmanager
from typing import Callable, Iterator

# Exit status of a command refused for bad input (argparse's own usage errors use 2 too).
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class HolitomError(Exception):
    """Base class of every error the toolkit raises on purpose."""


class ConfigError(HolitomError, ValueError):
    """A configuration value (merge / export / runtime) is out of its allowed range."""


class InputError(HolitomError, ValueError):
    """A tensor or argument has the wrong rank, shape, dtype or value (e.g. NaN)."""


class CheckpointError(HolitomError):
    """A model directory is missing, incomplete, corrupt or of an unsupported architecture."""


class VideoError(HolitomError):
    """A video file or in-memory frame batch cannot be read or sampled as asked."""


class ExportError(HolitomError):
    """Export to ONNX failed, or an exported graph does not match the PyTorch path."""


class ManifestError(HolitomError):
    """An export directory's manifest is missing, of another major version, or names missing files."""


class OutputError(HolitomError):
    """An output location (export folder, benchmark folder) cannot be created, written or replaced."""


class BackendError(HolitomError):
    """A runtime backend is unknown, unavailable, or was given inputs it cannot take."""


class EngineMismatchError(BackendError):
    """A TensorRT engine was built for another TensorRT version or GPU than the one running it."""


class MissingDependencyError(HolitomError, ImportError):
    """An optional heavy dependency (tensorrt, polygraphy, triton, onnxruntime-gpu) is not installed."""

    def __init__(self, package: str, purpose: str, install: str | None = None):
        hint = install or f"pip install {package}"
        super().__init__(f"{purpose} needs the optional package '{package}', which is not installed; install it with `{hint}`.")
        self.package = package


class MissingExtraError(MissingDependencyError):
    """A command needs an extra of the package (``[export]``, ``[bench]``) that the edge install leaves out."""

    def __init__(self, extra: str, purpose: str, package: str):
        HolitomError.__init__(self, f'{purpose} needs: pip install "holitom-deploy[{extra}]" (the package \'{package}\' is not installed)')
        self.package = package
        self.extra = extra


# What each extra adds that the edge install (numpy, onnxruntime, PyAV, tokenizers, jinja2) lacks, as import names.
EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "export": ("torch", "transformers", "safetensors", "onnx", "onnxscript"),
    "bench": ("torch", "transformers", "safetensors", "onnx", "psutil"),
    "calibrate": ("torch", "onnx", "matplotlib"),
}


def require_extra(extra: str, purpose: str) -> None:
    """Raise :class:`MissingExtraError` unless every module of ``extra`` is installed (found, not imported)."""
    import importlib.util

    for module in EXTRA_MODULES[extra]:
        if importlib.util.find_spec(module) is None:
            raise MissingExtraError(extra, purpose, module)


class Interrupted(KeyboardInterrupt):
    """SIGTERM (or SIGINT) arrived: raised in the main thread so every ``finally`` / cleanup runs."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_interrupted(signum, frame):
    raise Interrupted(signum)


@contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM raises :class:`Interrupted` (Python's default would exit without running any cleanup)."""
    try:
        previous = signal.signal(signal.SIGTERM, _raise_interrupted)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_reporting_errors(prog: str, command: Callable[[], int]) -> int:
    """Run a CLI command: a HolitomError becomes one ``prog: error: ...`` line on stderr and exit 2.

    SIGINT and SIGTERM stop the command through the same path as an error (every
    cleanup runs, so staging folders are removed) and print one line; the exit
    status is 128 + the signal number, as a shell reports a killed command.
    Warnings print as one ``warning:`` line each.
    """
    previous_format = warnings.formatwarning
    warnings.formatwarning = lambda message, *rest, **kw: f"{prog}: warning: {message}\n"
    try:
        with _terminate_as_interrupt():
            return command()
    except HolitomError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as exc:
        signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
        print(f"{prog}: interrupted by {signal.Signals(signum).name}; partial output was removed", file=sys.stderr)
        return 128 + int(signum)
    finally:
        warnings.formatwarning = previous_format


__all__ = [
    "HolitomError",
    "ConfigError",
    "InputError",
    "CheckpointError",
    "VideoError",
    "ExportError",
    "ManifestError",
    "OutputError",
    "BackendError",
    "EngineMismatchError",
    "MissingDependencyError",
    "MissingExtraError",
    "Interrupted",
    "EXIT_USAGE",
    "EXIT_INTERRUPTED",
    "require_extra",
    "run_reporting_errors",
]
