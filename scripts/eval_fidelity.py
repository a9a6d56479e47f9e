#!/usr/bin/env python
"""Fidelity evaluation of HoliTom (the script behind ``holitom eval``).

Accuracy on the held-out split of the generated video-QA benchmark
(``holitom.eval.videoqa``) for vanilla, HoliTom at r = 0.10 .. 0.25 with and
without the inner merge, and the competing methods at the same visual-token
budgets, on the torch and onnxruntime backends; per question type, with the
share of vanilla accuracy and of prefill FLOPs. Prints a table, or JSON with
--json; --out DIR writes eval.json and accuracy_vs_flops.png.

Usage::

    python scripts/eval_fidelity.py
    python scripts/eval_fidelity.py --model EXPORT_DIR --backends onnxruntime --out eval-out
    python scripts/eval_fidelity.py --help
"""

from __future__ import annotations

import sys

from holitom.eval.cli import main

if __name__ == "__main__":
    sys.exit(main(prog="eval_fidelity.py"))
