#!/usr/bin/env python
"""HoliTom with its temporal windows bounded to W frames, as extra rows of `holitom eval`.

The paper's setting, and every preset the toolkit ships, leaves the longest temporal window unbounded
(DESIGN.md section 2: W = unbounded). Inside a window each static position collapses to one token at the
window's first frame, so a longer window removes more tokens but also more of what happened between its
first and last frame. This script measures that trade on the generated benchmark: for each W of
``--windows`` it registers, beside the paper presets, ``holitom_w{W}-r{pct}`` (the paper's ``r{pct}`` with
``max_window=W``) and ``holitom_w{W}_outer-r{pct}`` (the same without the inner merge), then runs
``holitom eval`` with those method families added to ``--methods``. Every other flag is `holitom eval`'s.

    python scripts/sweep_max_window.py --windows 1,2,4 --items 420 --backends torch --ratios 0.1,0.25 --threads 1

The added rows run on the torch backend only (the default ``--backends``): exports carry the paper
presets. With W >= the number of sampled frames a row is the paper's HoliTom again (the tests check
that it answers alike).
"""

from __future__ import annotations

import argparse
import sys

DEFAULT_METHODS = ("vanilla", "holitom-outer", "holitom")
WINDOWED_METHODS = ("holitom-outer", "holitom")  # `holitom eval`'s HoliTom rows, each run again per W


def register_windowed_presets(windows: list[int]) -> list[str]:
    """Register, for each W, every method of WINDOWED_METHODS at every paper retain ratio with its window
    bounded to W (``holitom`` -> ``holitom_w{W}``, ``holitom-outer`` -> ``holitom_w{W}_outer``); returns
    the new method names in table order."""
    from holitom.bench.config import method_specs
    from holitom.limits import PAPER_RETAIN_PERCENTS
    from holitom.merge import register_preset
    from holitom.runtime import RuntimeConfig

    specs, methods = method_specs(), []
    for window in windows:
        for name in WINDOWED_METHODS:
            spec, family = specs[name], name.replace("holitom", f"holitom_w{window}").replace("-", "_")
            for pct in PAPER_RETAIN_PERCENTS:
                # the config that method's row runs with (its preset, its inner step or none), then the window
                config = RuntimeConfig(preset=spec.preset_for(pct), inner_merge=spec.inner_merge).merge_config()
                register_preset(f"{family}-r{pct}", config.replace(max_window=window), overwrite=True)
            methods.append(family)
    return methods


def _windows(text: str) -> list[int]:
    try:
        windows = [int(w) for w in text.split(",") if w.strip()]
    except ValueError:
        windows = []
    if not windows or min(windows) < 1:
        raise argparse.ArgumentTypeError(f"--windows takes a comma list of window lengths >= 1 frame, such as 1,2,4; got {text!r}")
    return list(dict.fromkeys(windows))


def main(argv: list[str] | None = None) -> int:
    from holitom.bench.cli import split_list
    from holitom.errors import ConfigError
    from holitom.eval.cli import main as eval_main

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], add_help=False)
    parser.add_argument("--windows", type=_windows, default=[1, 2, 4], help="comma list of W (frames; default 1,2,4)")
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS), help="`holitom eval` methods the W rows are added to")
    parser.add_argument("--backends", default="torch", help="`holitom eval` backends; the W rows need torch (default: torch only)")
    args, rest = parser.parse_known_args(argv)
    try:
        backends = split_list(args.backends, "backends")  # as `holitom eval` reads it
    except ConfigError as exc:
        parser.error(str(exc))
    if "torch" not in backends:
        parser.error(f"--backends {args.backends}: the W rows run on the torch backend only (exports carry the paper presets); add torch.")
    if "-h" in rest or "--help" in rest:
        print(parser.format_help().replace("usage: ", "this script's flags, then `holitom eval`'s: ", 1))
    methods = [m for m in args.methods.split(",") if m] + register_windowed_presets(args.windows)
    return eval_main([*rest, "--backends", args.backends, "--methods", ",".join(methods)], prog="sweep_max_window.py")


if __name__ == "__main__":
    sys.exit(main())
