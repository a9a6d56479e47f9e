"""What the export folder's digest check costs `holitom run`, measured in one run.

`holitom run --model EXPORT_DIR` checks every file named in the manifest against its
recorded sha256 before any session is built. The first load of a folder hashes every
byte; the result is recorded in the cache under each file's identity (device, inode,
size, mtime, ctime), so later loads only stat the files. This prints, for the
default model's export (or --export DIR):

- the whole run (load + answer), with the record in place (what every run after the first pays),
- the check alone, first load (hashes everything) and later loads (stats only),
- each as a share of the run, and the hashing throughput (to scale to larger exports).

    .venv/bin/python scripts/bench_digest.py [--export DIR] [--frames 8] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


def _median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--export", default=None, help="an export folder (default: export the default model, preset none, into a temp folder)")
    parser.add_argument("--preset", default="none")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="holitom-bench-digest-") as work:
        os.environ["HOLITOM_CACHE"] = str(Path(work) / "cache")  # a private cache: its verification records start empty
        return _measure(args, Path(work))


def _measure(args, work: Path) -> int:
    from holitom.export import ExportConfig, export_model
    from holitom.export.digests import record_path, verify_files
    from holitom.export.manifest import MANIFEST_NAME, read_manifest
    from holitom.runtime import GenerationConfig, RuntimeConfig, load_pipeline
    from holitom.video import make_frames, write_video

    folder = Path(args.export) if args.export else work / "export"
    if not args.export:
        print("exporting the default model (preset none, no validation) ...", file=sys.stderr)
        export_model("default", folder, ExportConfig(presets=(args.preset,), progress=False))
    clip = write_video(work / "clip.mp4", make_frames(2 * args.frames, 256, 320, seed=0), fps=8)
    files = read_manifest(folder, check_files=False).files
    total_bytes = sum(f["bytes"] for f in files.values())
    manifest_path = folder / MANIFEST_NAME
    record = record_path(folder)

    def check_first_load():
        record.unlink(missing_ok=True)
        verify_files(folder, files, manifest_path, "")

    def check_later_load():
        verify_files(folder, files, manifest_path, "")

    def whole_run():
        with load_pipeline(folder, RuntimeConfig(backend="onnxruntime", preset=args.preset, num_frames=args.frames)) as pipe:
            pipe.run(clip, "What moves?", args.frames, GenerationConfig(max_new_tokens=4))

    whole_run()  # warm-up; leaves the record in place
    run_ms = _median_ms(whole_run, args.repeats)
    first_ms = _median_ms(check_first_load, args.repeats)
    later_ms = _median_ms(check_later_load, args.repeats)
    print(f"export: {folder} ({len(files)} files, {total_bytes / 1e6:.1f} MB); {args.frames} frames, 4 tokens, medians of {args.repeats}")
    print(f"holitom run (load + answer), record in place: {run_ms:8.1f} ms")
    print(f"digest check, first load (hashes every byte): {first_ms:8.1f} ms = {first_ms / run_ms:6.1%} of the run ({total_bytes / 1e6 / (first_ms / 1e3):.0f} MB/s)")
    print(f"digest check, later loads (record, stat only): {later_ms:8.2f} ms = {later_ms / run_ms:6.2%} of the run")
    return 0


if __name__ == "__main__":
    sys.exit(main())
