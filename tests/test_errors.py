"""The CLI's error and interruption contract (holitom.errors.run_reporting_errors), in process."""

from __future__ import annotations

import ctypes
import signal
import sys
import time

import pytest

from holitom.errors import ConfigError, raise_if_stopped, run_reporting_errors
from holitom.paths import move_into_place, staged_output


class _SignalledWhileCollected:
    """Delivers SIGNUM to this process from inside its own finaliser, where a raised exception is ignored."""

    def __init__(self, signum: int):
        self.signum = signum

    def __del__(self):
        signal.raise_signal(self.signum)
        sum(range(1000))  # bytecode boundaries: the Python-level handler runs here, inside __del__


class _SignalledWhileLookedUp:
    """Delivers SIGNUM from inside ``__getattr__``: called from C code that clears any error, it swallows the stop."""

    def __init__(self, signum: int):
        self.signum = signum

    def __getattr__(self, name: str):
        signal.raise_signal(self.signum)  # the Python-level handler raises Interrupted in here
        raise AttributeError(name)


def swallow_a_stop(signum: int) -> None:
    """Have ``signum`` handled, and its exception silently dropped, as PyObject_HasAttr does (no unraisable hook sees it)."""
    has_attr = ctypes.pythonapi.PyObject_HasAttr
    has_attr.argtypes = (ctypes.py_object, ctypes.py_object)
    assert has_attr(_SignalledWhileLookedUp(signum), "anything") == 0


@pytest.fixture
def sigint_from_a_terminal():
    """SIGINT as a command typed at a terminal has it: Python's KeyboardInterrupt handler.

    (A test run started in the background by a non-interactive shell inherits SIGINT ignored.)
    """
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_handled_inside_a_finaliser_still_stops_the_command(signum, capsys, sigint_from_a_terminal):
    reached_the_end = []

    def command() -> int:
        _SignalledWhileCollected(signum)  # collected at once: the signal lands in __del__
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # the signal sent again must stop the command in here
            time.sleep(0.001)
        reached_the_end.append(True)
        return 0

    assert run_reporting_errors("holitom test", command) == 128 + signum
    assert not reached_the_end
    assert capsys.readouterr().err == f"holitom test: interrupted by {signal.Signals(signum).name}; partial output was removed\n"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_swallowed_by_c_code_is_raised_at_the_next_checkpoint(signum, capsys, sigint_from_a_terminal):
    went_on = []

    def command() -> int:
        swallow_a_stop(signum)
        went_on.append(True)  # the command did not see the stop...
        raise_if_stopped()  # ...until here
        return 0

    assert run_reporting_errors("holitom test", command) == 128 + signum
    assert went_on == [True]  # so the stop really was swallowed, and not by the finaliser path
    assert capsys.readouterr().err == f"holitom test: interrupted by {signal.Signals(signum).name}; partial output was removed\n"
    assert run_reporting_errors("holitom test", lambda: (raise_if_stopped(), 0)[1]) == 0  # the stop ended with its command


def test_a_command_whose_stop_was_swallowed_publishes_nothing(tmp_path, capsys):
    out = tmp_path / "out"

    def command() -> int:
        with staged_output(out, "output folder") as tmp:
            (tmp / "graph.onnx").write_bytes(b"complete")
            swallow_a_stop(signal.SIGTERM)
            move_into_place(tmp, out, False, "output folder")
        return 0

    assert run_reporting_errors("holitom test", command) == 128 + signal.SIGTERM
    assert list(tmp_path.iterdir()) == []  # no output and no staging folder
    assert "interrupted by SIGTERM" in capsys.readouterr().err


def test_an_ignored_sigint_stays_ignored():
    """A background job of a non-interactive shell starts with SIGINT ignored: the command is not stopped by it."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:

        def command() -> int:
            signal.raise_signal(signal.SIGINT)
            return 0

        assert run_reporting_errors("holitom test", command) == 0
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_handlers_and_hook_are_restored_after_the_command(sigint_from_a_terminal):
    before = (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT), sys.unraisablehook)
    assert run_reporting_errors("holitom test", lambda: 0) == 0
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT), sys.unraisablehook) == before


def test_a_toolkit_error_is_one_line_and_exit_2(capsys):
    def command() -> int:
        raise ConfigError("ratio 2 is out of range (0, 1]; pass --ratio 0.1")

    assert run_reporting_errors("holitom test", command) == 2
    assert capsys.readouterr().err == "holitom test: error: ratio 2 is out of range (0, 1]; pass --ratio 0.1\n"
