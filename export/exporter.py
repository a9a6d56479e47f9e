"""Export a checkpoint to ONNX graphs plus a manifest, atomically.

Everything is written into a temporary sibling folder; only when every graph
is written, checked and validated is it renamed into place. An interrupted or
failed export leaves nothing at the output path.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from holitom import contracts as C
from holitom.limits import DEFAULT_OPSET, check_opset
from holitom.errors import ConfigError, ExportError, raise_if_stopped
from holitom.export import wrappers as W
from holitom.export.manifest import GraphEntry, Manifest, file_table, inner_merge_key
from holitom.export.onnx_io import check_graph_io, check_model_file, save_model
from holitom.export.tracing import export_module

PAPER_PRESETS = ("none", "r10", "r15", "r20", "r25")
# Tokenizer, chat template and preprocessor files copied next to the graphs so the
# export folder is self-contained (the runtime never reads the checkpoint).
ASSET_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "chat_template.json",
    "chat_template.jinja",
    "preprocessor_config.json",
    "video_preprocessor_config.json",
    "processor_config.json",
    "generation_config.json",
)


@dataclass(frozen=True)
class ExportConfig:
    """What to export. ``presets`` of None means the paper's presets (and vanilla)."""

    num_frames: int = 8  # frames of the validation input (tracing uses 2: the frame axis is dynamic)
    presets: tuple[str, ...] | None = None
    opset: int | None = None
    attention: str = "standard"  # decoder prefill attention form, see holitom.models.export_attention
    force: bool = False
    progress: bool = True
    # A shared cache entry: when another process completes ``out`` first, keep its copy (the same export).
    keep_existing: bool = False

    def __post_init__(self):
        from holitom.limits import MAX_FRAMES, MIN_FRAMES, check_int

        check_int(self.num_frames, "num_frames", MIN_FRAMES, MAX_FRAMES)
        from holitom.merge import preset_names

        from holitom.merge import MergeConfig, get_preset

        for name in self.presets or ():
            if name not in preset_names():
                raise ConfigError(f"unknown preset '{name}'; choose from {preset_names()}.")
            if not isinstance(get_preset(name), MergeConfig):
                raise ConfigError(
                    f"preset '{name}' is a competing method, which runs on the torch backend only; export HoliTom "
                    "presets (none, r10..r25, r10-outer..r25-outer)."
                )
        from holitom.models.export_attention import check_flavor

        check_flavor(self.attention)
        if self.opset is not None:
            check_opset(self.opset)

    @property
    def preset_list(self) -> tuple[str, ...]:
        return self.presets or PAPER_PRESETS


@dataclass
class ExportResult:
    out: Path
    manifest: Manifest
    report: list = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"exported to {self.out}"]
        for stage, entry in self.manifest.graphs.items():
            lines.append(f"  {stage:15s} {entry.file} ({sum(entry.sizes.values()) / 1e6:.1f} MB)")
        lines.append(f"  outer merge presets: {', '.join(self.manifest.outer_merge)}")
        lines.append(f"  inner merge graphs: {', '.join(self.manifest.inner_merge) or 'none'}")
        if self.report:
            worst = max(self.report, key=lambda r: r.max_abs_error / max(r.tolerance, 1e-30))
            lines.append(
                f"  validated {len(self.report)} outputs against PyTorch: all within tolerance "
                f"(worst {worst.stage}/{worst.output}: {worst.max_abs_error:.2e} <= {worst.tolerance:.0e})"
            )
        return "\n".join(lines)


def _example_inputs(model, dims: C.ModelDims, dtype: torch.dtype, kv_buffers: bool = False) -> dict[str, tuple]:
    """Tracing inputs with every dynamic size >= 2 and distinct (so nothing is specialised); ``kv_buffers``: the
    decode step over KV buffers (``stage_specs(kv_buffers=True)``)."""
    g = torch.Generator().manual_seed(0)
    D, H = dims.hidden_size, dims.image_size
    kv = lambda n: torch.randn(1, dims.num_kv_heads, n, dims.head_dim, generator=g).to(dtype)  # noqa: E731
    seq, tail_seq, past_head, past_tail = 11, 7, 13, 9
    # KV of the head and tail groups: filled caches, or buffers with room (the onnxruntime-form decode step).
    kv_sizes = (17, 12) if kv_buffers else (past_head, past_tail)
    return {
        C.VISION: (torch.randn(2, 3, H, H, generator=g).to(dtype),),
        C.EMBED: (torch.arange(3, dtype=torch.int64)[None],),
        C.DECODER_HEAD: (torch.randn(1, seq, D, generator=g).to(dtype), torch.arange(seq)[None]),
        C.DECODER_TAIL: (torch.randn(1, tail_seq, D, generator=g).to(dtype), torch.tensor([[0, 1, 3, 4, 8, 9, 10]])),
        C.DECODE_STEP: (
            torch.randn(1, 1, D, generator=g).to(dtype),
            torch.tensor([[past_head]]),
            *([torch.tensor([past_head, past_tail])] if kv_buffers else []),  # kv_lengths
            *[kv(kv_sizes[int(i >= dims.inner_layer)]) for i in range(dims.num_layers) for _ in (0, 1)],
        ),
    }


# (torch model, tokenizer, staged export folder, frames) -> the per-output checks; raises ExportError on a mismatch.
Validator = Callable[[torch.nn.Module, object, Path, int], list]


def export_model(
    model: str | Path, out: str | Path, config: ExportConfig | None = None, *, validator: Validator | None = None
) -> ExportResult:
    """Export ``model`` ('default' or a checkpoint folder) into ``out``; see the module docstring.

    ``validator`` (normally :func:`holitom.runtime.validate.validate_export`,
    which runs the graphs, so it lives in the runtime layer above this one) checks
    the staged folder before it is moved into place; its report goes into the
    manifest. None skips validation.
    """
    from tqdm.auto import tqdm

    from holitom.export.holitom_onnx import build_inner_merge_model, build_outer_merge_model
    from holitom.merge import get_preset
    from holitom.models.export_attention import export_attention
    from holitom.models.loading import load_llava
    from holitom.models.checkpoint import load_tokenizer
    from holitom.models.facts import model_dims, split_layer, stop_token_ids
    from holitom.sources import resolve_source

    from holitom.export.manifest import MANIFEST_NAME
    from holitom.paths import check_output_dir, move_into_place, staged_output

    config = config or ExportConfig()
    source = resolve_source(model)
    if source.is_export:
        raise ExportError(f"'{source.path}' is already an export; pass the checkpoint folder (or 'default') to export.")
    # Before any work: the place can be written, and --force replaces only an earlier export.
    out = check_output_dir(out, "output folder", replace=config.force or config.keep_existing, replaceable=lambda p: (p / MANIFEST_NAME).is_file())
    opset = config.opset or DEFAULT_OPSET

    torch_model = load_llava(source.path, dtype=torch.float32)
    torch_model.eval()
    tokenizer = load_tokenizer(source.path)
    cfg = torch_model.config
    presets = {name: get_preset(name) for name in config.preset_list}
    split_layers = {split_layer(m, cfg.num_layers) for m in presets.values()}
    if len(split_layers) != 1:
        raise ConfigError(
            f"presets {list(presets)} split the decoder at different layers {sorted(split_layers)}; export them separately."
        )
    k = split_layers.pop()
    dims = model_dims(cfg, k)
    # An onnxruntime-form export decodes over preallocated KV buffers (holitom.models.export_attention).
    kv_buffers = config.attention == "onnxruntime"
    specs = C.stage_specs(dims, kv_buffers=kv_buffers)
    examples = _example_inputs(torch_model, dims, torch.float32, kv_buffers)
    modules = {
        C.VISION: W.VisionEncoder(torch_model),
        C.EMBED: W.EmbedTokens(torch_model),
        C.DECODER_HEAD: W.DecoderHead(torch_model, k),
        C.DECODER_TAIL: W.DecoderTail(torch_model, k),
        C.DECODE_STEP: W.KVBufferDecodeStep(torch_model, cfg.num_layers, k) if kv_buffers else W.DecodeStep(torch_model, cfg.num_layers),
    }
    inner_configs = {inner_merge_key(m.inner.ratio, m.inner.mode): m.inner for m in presets.values() if m.inner is not None}
    steps = len(modules) + len(presets) + len(inner_configs) + 2

    with staged_output(out, "output folder") as tmp:
        with tqdm(total=steps, desc="export", unit="step", disable=None if config.progress else True) as bar:  # None: only on a terminal
            graphs: dict[str, GraphEntry] = {}
            for stage, module in modules.items():
                raise_if_stopped()  # a stop swallowed inside the last trace ends the export here, not after it
                bar.set_postfix_str(stage)
                with export_attention(config.attention):
                    graph = export_module(module, examples[stage], specs[stage], opset)
                graphs[stage] = _write_graph(graph, tmp, f"{stage}.onnx", specs[stage])
                bar.update()
            outer: dict[str, dict] = {}
            for name, merge in presets.items():
                bar.set_postfix_str(f"outer_merge {name}")
                # The newline embedding is a weight of the model: baked in, so the graph's inputs are the contract's.
                newline = torch_model.image_newline.detach().float().numpy()
                onnx_model = build_outer_merge_model(merge, cfg.pooled_grid, cfg.layout, cfg.hidden_size, opset=opset, image_newline=newline)
                entry = _write_graph(onnx_model, tmp, f"outer_merge.{name}.onnx", specs[C.OUTER_MERGE])
                outer[name] = {"graph": entry.to_dict(), "merge": merge.to_dict()}
                bar.update()
            inner: dict[str, dict] = {}
            for key, inner_cfg in inner_configs.items():
                bar.set_postfix_str(f"inner_merge {key}")
                onnx_model = build_inner_merge_model(inner_cfg.mode, inner_cfg.ratio, cfg.hidden_size, opset=opset)
                file = f"inner_merge.{inner_cfg.mode}.r{round(inner_cfg.ratio * 100):03d}.onnx"
                entry = _write_graph(onnx_model, tmp, file, specs[C.INNER_MERGE])
                inner[key] = {"graph": entry.to_dict(), "ratio": inner_cfg.ratio, "mode": inner_cfg.mode}
                bar.update()
            bar.set_postfix_str("assets")
            assets = []
            for name in ASSET_FILES:
                if (source.path / name).is_file():
                    shutil.copy2(source.path / name, tmp / name)
                    assets.append(name)
            bar.update()
            from holitom import __version__

            names = [n for e in [*graphs.values(), *(GraphEntry.from_dict(v["graph"]) for v in [*outer.values(), *inner.values()])] for n in e.sizes]
            manifest = Manifest(
                toolkit_version=__version__,
                source={"model": str(model), "path": str(source.path)},
                model_config=cfg.to_dict(),
                dims=dims,
                layout=cfg.layout,
                grid=tuple(cfg.pooled_grid),
                video_token_id=int(cfg.video_token_id),
                stop_token_ids=list(stop_token_ids(tokenizer)),
                precision="float32",
                opset=opset,
                attention=config.attention,
                graphs=graphs,
                outer_merge=outer,
                inner_merge=inner,
                assets=assets,
                files=file_table(tmp, [*dict.fromkeys(names), *assets]),
            )
            manifest.write(tmp)
            report = []
            if validator is not None:
                raise_if_stopped()
                bar.set_postfix_str("validate")
                report = validator(torch_model, tokenizer, tmp, config.num_frames)
                manifest.validation = {"frames": config.num_frames, "outputs": [r.to_dict() for r in report]}
                manifest.write(tmp)
            bar.update()
        move_into_place(tmp, out, config.force, "output folder", keep_existing=config.keep_existing)
    return ExportResult(out=out, manifest=manifest, report=report)


def _write_graph(model, folder: Path, file: str, spec: C.StageSpec) -> GraphEntry:
    check_graph_io(model, spec)
    sizes = save_model(model, folder / file)
    check_model_file(folder / file)
    return GraphEntry.from_spec(file, spec, sizes)
