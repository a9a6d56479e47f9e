"""Typed exceptions raised at the toolkit's edges.

Every message says what was received, what was expected and how to fix it.
The CLI prints ``str(exc)`` of any :class:`HolitomError` on one line and exits 2,
so messages must be complete sentences without relying on a traceback.
Never use ``assert`` for user input: ``python -O`` strips it.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
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


# The signal that asked the running command to stop, once its handler ran. The handler's
# Interrupted can be swallowed where no unraisable hook sees it: C code that clears any error
# (PyObject_HasAttr or PyDict_GetItem calling into Python code) or a library's bare ``except``.
# The command then goes on; raise_if_stopped raises it again at the points that must not pass
# a stop: between an export's steps and before any output is published.
_stop_signal: int | None = None


def _raise_interrupted(signum, frame):
    global _stop_signal
    _stop_signal = signum
    raise Interrupted(signum)


def raise_if_stopped() -> None:
    """Raise :class:`Interrupted` if SIGTERM / SIGINT asked this command to stop, even when the first raise was swallowed."""
    if _stop_signal is not None:
        raise Interrupted(_stop_signal)


# Long enough for the main thread to leave the unraisable hook (microseconds), short next to a user's patience.
_RESEND_DELAY_S = 0.01


def _signal_again_if_swallowed(previous_hook: Callable, resenders: list[threading.Thread]) -> Callable:
    """An unraisable-exception hook that has a swallowed :class:`Interrupted` raised again.

    A Python signal handler runs at the next bytecode boundary, which may lie inside a
    ``__del__`` or a weakref callback; an exception raised there is ignored and handed to
    ``sys.unraisablehook``, and the stop would be lost (an export stopped this way ran to
    its end and exited 0). A timer thread sends the same signal again once the hook has
    returned, so the handler runs once more in the main thread's own code, where the
    exception propagates (or, landing in another finaliser, comes back here). Sent from
    in here, by ``os.kill``, ``signal.raise_signal`` or ``_thread.interrupt_main``, the
    handler would run at once, still inside the hook.
    """

    def hook(unraisable) -> None:
        if isinstance(unraisable.exc_value, Interrupted):
            resender = threading.Timer(_RESEND_DELAY_S, os.kill, args=(os.getpid(), unraisable.exc_value.signum))
            resender.daemon = True
            resender.start()
            resenders.append(resender)
        else:
            previous_hook(unraisable)

    return hook


@contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM and SIGINT raise :class:`Interrupted`, and a swallowed one is not lost.

    Python's default for SIGTERM exits without running any cleanup. SIGINT is taken over
    only from Python's own handler: a SIGINT ignored by the parent (a background job) stays ignored.
    Swallowed inside a finaliser, the stop is sent again at once (:func:`_signal_again_if_swallowed`);
    swallowed anywhere else, :func:`raise_if_stopped` raises it at the command's next checkpoint.
    """
    global _stop_signal
    signums = [signal.SIGTERM]
    try:
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signums.append(signal.SIGINT)
        previous = {signum: signal.signal(signum, _raise_interrupted) for signum in signums}
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    previous_hook = sys.unraisablehook
    resenders: list[threading.Thread] = []
    sys.unraisablehook = _signal_again_if_swallowed(previous_hook, resenders)
    try:
        yield
    finally:
        try:
            for resender in resenders:  # a signal sent again lands while our handler is still in place
                resender.join()
        finally:
            sys.unraisablehook = previous_hook
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            _stop_signal = None  # the stop belonged to this command


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
    "raise_if_stopped",
    "run_reporting_errors",
]
