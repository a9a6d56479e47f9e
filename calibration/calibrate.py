"""``holitom calibrate``: a float32 export folder in, a quantized export folder out.

The output is a complete export folder (same graphs for the merges and the token
embedding, quantized vision / decoder graphs, the same assets), written into a
staging folder and renamed into place only when every quantized graph passed its
validation against the float32 graph. Its manifest keeps ``precision`` float32
(the dtype of every graph's inputs and outputs, what the runtime feeds) and adds
a ``quantization`` table: per-graph precision and details, the calibration method
and data, and the calibration report.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from holitom import contracts as C
from holitom.errors import ConfigError

from holitom.calibration.compare import OutputAgreement, agreement, check_agreement, run_graph
from holitom.calibration.config import FLOAT32, CalibrationConfig
from holitom.calibration.report import REPORT_PNG, CalibrationReport

# The report's HoliTom preset when none is asked: the paper's most aggressive setting, where decisions matter most.
REPORT_PRESETS = ("r10", "r15", "r20", "r25")


@dataclass
class CalibrationResult:
    out: Path
    manifest: object
    agreement: list[OutputAgreement]
    report: CalibrationReport
    png: Path | None

    def summary(self) -> str:
        q = self.manifest.quantization
        lines = [f"quantized export written to {self.out}"]
        for stage, item in q["graphs"].items():
            lines.append(f"  {stage:15s} {item['precision']:7s} {item.get('format', '')}")
        data = q["calibration"]
        lines.append(f"  calibration: {data['method']} on {data['frames']} frames of {len(data['videos'])} videos ({data['frames_per_clip']} per clip)")
        worst: dict[str, OutputAgreement] = {}
        for row in self.agreement:  # the lowest cosine of each graph (the manifest's validation lists every output)
            if row.stage not in worst or row.cosine < worst[row.stage].cosine:
                worst[row.stage] = row
        lines.append(f"  validated {len(self.agreement)} outputs against float32; worst per graph:")
        lines += ["    " + row.line() for row in worst.values()]
        lines += ["  " + line for line in self.report.lines()]
        if self.png is not None:
            lines.append(f"  report figure: {self.png}")
        return "\n".join(lines)


def _report_preset(manifest, asked: str | None) -> str:
    if asked is not None:
        if asked not in manifest.outer_merge:
            raise ConfigError(f"the export has outer-merge graphs for {sorted(manifest.outer_merge)}, not preset {asked!r}; pass one of those with --preset.")
        return asked
    return next((p for p in REPORT_PRESETS if p in manifest.outer_merge), next(iter(manifest.outer_merge)))


def calibrate_export(export_dir: str | Path, out: str | Path, config: CalibrationConfig, *, force: bool = False, png: bool = True) -> CalibrationResult:
    """Quantize the float32 export in ``export_dir`` as ``config`` says; write the quantized export to ``out``."""
    from holitom.export.manifest import MANIFEST_NAME, GraphEntry, file_table, read_manifest
    from holitom.merge import MergeConfig
    from holitom.paths import check_output_dir, move_into_place, staged_output
    from holitom.sources import resolve_source

    from holitom.calibration.data import FrameBatches, find_videos, record_pipeline
    from holitom.calibration.quantize import quantize_vision, quantize_weights
    from holitom.calibration.report import answer_agreement, decision_agreement, layer_cosine, write_png

    source = resolve_source(export_dir, "EXPORT_DIR")
    if not source.is_export:
        raise ConfigError(f"'{source.path}' is not an export folder; export it first with `holitom export --model {source.path} --out DIR`.")
    folder = source.path
    manifest = read_manifest(folder)
    if manifest.quantization or manifest.precision != FLOAT32:
        raise ConfigError(f"the export in '{folder}' is already {manifest.precision} / quantized; calibrate the float32 export it came from.")
    videos = find_videos(config.videos)[: config.num_clips]
    preset = _report_preset(manifest, config.preset)
    out = check_output_dir(out, "output folder", replace=force, replaceable=lambda p: (p / MANIFEST_NAME).is_file())
    frames = config.frames_per_clip
    reference = record_pipeline(folder, videos, frames, preset, config.report_tokens, config.progress, "float32 run")

    quantized = {stage: p for stage, p in config.precisions.items() if p != FLOAT32}
    replaced = {n for stage in quantized for n in manifest.graphs[stage].sizes}
    with staged_output(out, "output folder") as tmp:
        for name in manifest.files:
            if name not in replaced:
                shutil.copy2(folder / name, tmp / name)
        details: dict[str, dict] = {}
        for stage, precision in quantized.items():
            file = manifest.graphs[stage].file
            if stage == C.VISION:
                batches = FrameBatches(reference, config.calibration_frames, config.progress)
                details[stage] = quantize_vision(folder / file, tmp / file, batches, config.method, config.score_precision == FLOAT32, config.activations, reduce_range=config.weight_bits == 7)
                details[stage]["calibration_batches"] = batches.batches
            else:
                details[stage] = quantize_weights(folder / file, tmp / file, precision, config.block_size)
        rows: list[OutputAgreement] = []
        for stage, precision in quantized.items():
            calls = [call for clip in reference.clips for call in clip.calls[stage]]
            got = run_graph(tmp / manifest.graphs[stage].file, stage, manifest.dims, [feed for feed, _ in calls], details[stage])
            rows += agreement(stage, precision, got, [want for _, want in calls])
        check_agreement(rows)

        for stage in quantized:
            entry = manifest.graphs[stage]
            sizes = {n: (tmp / n).stat().st_size for n in [entry.file, f"{entry.file}.data"] if (tmp / n).exists()}
            manifest.graphs[stage] = GraphEntry(entry.file, entry.inputs, entry.outputs, entry.dynamic_axes, sizes)
        names = [n for e in manifest.all_graph_entries() for n in e.sizes] + list(manifest.assets)
        manifest.files = file_table(tmp, list(dict.fromkeys(names)))
        manifest.engines = None  # engines of the float32 graphs do not belong to these
        manifest.validation = {"against": f"float32 export {folder}", "frames": reference.frames, "outputs": [r.to_dict() for r in rows]}
        manifest.quantization = {
            "graphs": {stage: details.get(stage, {"precision": p}) for stage, p in config.precisions.items()},
            "calibration": {
                "method": config.method,
                "score_precision": config.score_precision,
                "activations": config.activations,
                "weight_bits": config.weight_bits,
                "videos": [str(v) for v in videos],
                "frames_per_clip": frames,
                "frames": min(config.calibration_frames, reference.frames),
                "source_export": str(folder),
            },
        }
        manifest.write(tmp)

        quant = record_pipeline(tmp, videos, frames, preset, config.report_tokens, config.progress, "quantized run")
        report = CalibrationReport(clips=len(videos), preset=preset)
        if C.VISION in quantized:
            vision_file = manifest.graphs[C.VISION].file
            report.layer_cosine = layer_cosine(folder / vision_file, tmp / vision_file, [c.pixel_values for c in reference.clips])
            merge = MergeConfig.from_dict(manifest.outer_merge[preset]["merge"])
            pairs = [(a.calls[C.VISION][0][1], b.calls[C.VISION][0][1]) for a, b in zip(reference.clips, quant.clips)]
            report.windows_identical, report.kept_overlap = decision_agreement(pairs, merge, manifest.grid, manifest.layout)
        report.answers_identical, report.answer_prefix = answer_agreement([c.token_ids for c in reference.clips], [c.token_ids for c in quant.clips])
        manifest.quantization["report"] = report.to_dict()
        manifest.write(tmp)
        figure = write_png(report, tmp / REPORT_PNG) if png else None
        move_into_place(tmp, out, force, "output folder")
    return CalibrationResult(out, manifest, rows, report, None if figure is None else out / REPORT_PNG)
