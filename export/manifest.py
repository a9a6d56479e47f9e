"""The export manifest: a versioned JSON file written next to the graphs.

The runtime reads only the manifest (and the files it names): model sizes,
merge configs, file names with their byte sizes, I/O names, dynamic axes,
precision and the toolkit version. Keys are named constants so writer and
reader cannot drift apart (llama.cpp's ``clip-impl.h`` style).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from holitom.contracts import ModelDims, StageSpec
from holitom.errors import EngineMismatchError, ManifestError
from holitom.plugins_trt.tensorrt_env import EngineTarget

MANIFEST_NAME = "manifest.json"
FORMAT_NAME = "holitom-export"
# major.minor: a runtime reads any minor of its own major and refuses other majors.
FORMAT_VERSION = "1.2"

KEY_FORMAT = "format"
KEY_FORMAT_VERSION = "format_version"
KEY_TOOLKIT_VERSION = "toolkit_version"
KEY_SOURCE = "source"
KEY_MODEL_CONFIG = "model_config"
KEY_DIMS = "dims"
KEY_LAYOUT = "layout"
KEY_GRID = "grid"
KEY_VIDEO_TOKEN_ID = "video_token_id"
KEY_STOP_TOKEN_IDS = "stop_token_ids"
KEY_PRECISION = "precision"
KEY_OPSET = "opset"
KEY_ATTENTION = "attention"
KEY_GRAPHS = "graphs"
KEY_OUTER_MERGE = "outer_merge"
KEY_INNER_MERGE = "inner_merge"
KEY_ASSETS = "assets"
KEY_VALIDATION = "validation"
KEY_ENGINES = "engines"  # TensorRT engines built beside the graphs (absent before 1.2 and until built)


@dataclass(frozen=True)
class GraphEntry:
    """One exported graph: its files (the .onnx and any external-data file) and its I/O declaration."""

    file: str
    inputs: list[dict]
    outputs: list[dict]
    dynamic_axes: dict[str, dict[str, str]]
    sizes: dict[str, int]  # file name -> bytes, for every file the graph needs

    @classmethod
    def from_spec(cls, file: str, spec: StageSpec, sizes: dict[str, int]) -> "GraphEntry":
        def io(t):
            return {"name": t.name, "dtype": t.dtype, "shape": list(t.shape)}

        return cls(
            file=file,
            inputs=[io(t) for t in spec.inputs],
            outputs=[io(t) for t in spec.outputs],
            dynamic_axes={name: {str(k): v for k, v in axes.items()} for name, axes in spec.dynamic_axes().items()},
            sizes=sizes,
        )

    def to_dict(self) -> dict:
        return {"file": self.file, "inputs": self.inputs, "outputs": self.outputs, "dynamic_axes": self.dynamic_axes, "sizes": self.sizes}

    @classmethod
    def from_dict(cls, d: dict) -> "GraphEntry":
        return cls(file=d["file"], inputs=d["inputs"], outputs=d["outputs"], dynamic_axes=d["dynamic_axes"], sizes=d["sizes"])

    @property
    def input_names(self) -> list[str]:
        return [t["name"] for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t["name"] for t in self.outputs]


@dataclass(frozen=True)
class EngineEntry:
    """One serialized TensorRT engine built from one of the export's ONNX files."""

    file: str  # engine file, beside the graph
    size: int  # bytes
    precision: str  # builder precision it was built with (fp32 | fp16 | bf16; + int8 for Q/DQ graphs)

    def to_dict(self) -> dict:
        return {"file": self.file, "size": self.size, "precision": self.precision}

    @classmethod
    def from_dict(cls, d: dict) -> "EngineEntry":
        return cls(file=str(d["file"]), size=int(d["size"]), precision=str(d["precision"]))


@dataclass(frozen=True)
class EngineSet:
    """The export's TensorRT engines: the target they are tied to, how they were built, one per graph."""

    target: EngineTarget
    plugins: str  # "aot" | "jit" | "none" (see holitom.export.engines)
    profile: dict  # named dimension -> [min, opt, max] used for the optimization profiles
    files: dict[str, EngineEntry]  # ONNX file name -> its engine

    def to_dict(self) -> dict:
        return {
            **self.target.to_dict(),
            "plugins": self.plugins,
            "profile": self.profile,
            "files": {k: v.to_dict() for k, v in self.files.items()},
        }

    @classmethod
    def from_dict(cls, d: dict) -> "EngineSet":
        return cls(
            target=EngineTarget.from_dict(d),
            plugins=str(d["plugins"]),
            profile={k: list(v) for k, v in d["profile"].items()},
            files={k: EngineEntry.from_dict(v) for k, v in d["files"].items()},
        )

    def check_target(self, current: EngineTarget, folder) -> None:
        """Refuse engines built for another TensorRT version or GPU: serialized engines are not portable."""
        built = self.target
        wrong = [
            f"{what} {have!r} (built for {want!r})"
            for what, have, want in (
                ("TensorRT", current.tensorrt_version, built.tensorrt_version),
                ("GPU", current.device_name, built.device_name),
                ("compute capability", current.compute_capability, built.compute_capability),
            )
            if have != want
        ]
        if wrong:
            raise EngineMismatchError(
                f"the TensorRT engines in '{folder}' do not fit this machine: {', '.join(wrong)}. Engines are tied to the "
                f"TensorRT version and GPU they were built with; rebuild them here with `holitom build-engines {folder} --force`."
            )


@dataclass
class Manifest:
    toolkit_version: str
    source: dict
    model_config: dict
    dims: ModelDims
    layout: str
    grid: tuple[int, int]
    video_token_id: int
    stop_token_ids: list[int]
    precision: str
    opset: int
    graphs: dict[str, GraphEntry]  # stage name -> entry (vision_encoder, embed_tokens, decoder_head, ...)
    outer_merge: dict[str, dict]  # preset name -> {"graph": GraphEntry dict, "merge": MergeConfig dict}
    inner_merge: dict[str, dict]  # "ratio/mode" key -> {"graph": GraphEntry dict, "ratio":, "mode":}
    assets: list[str]  # tokenizer / preprocessor files copied next to the graphs
    validation: dict = field(default_factory=dict)
    attention: str = "standard"  # decoder prefill attention form (holitom.models.export_attention); absent before 1.1
    engines: EngineSet | None = None  # TensorRT engines, once `holitom build-engines` ran
    format_version: str = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {
            KEY_FORMAT: FORMAT_NAME,
            KEY_FORMAT_VERSION: self.format_version,
            KEY_TOOLKIT_VERSION: self.toolkit_version,
            KEY_SOURCE: self.source,
            KEY_MODEL_CONFIG: self.model_config,
            KEY_DIMS: self.dims.to_dict(),
            KEY_LAYOUT: self.layout,
            KEY_GRID: list(self.grid),
            KEY_VIDEO_TOKEN_ID: self.video_token_id,
            KEY_STOP_TOKEN_IDS: list(self.stop_token_ids),
            KEY_PRECISION: self.precision,
            KEY_OPSET: self.opset,
            KEY_ATTENTION: self.attention,
            KEY_GRAPHS: {k: v.to_dict() for k, v in self.graphs.items()},
            KEY_OUTER_MERGE: self.outer_merge,
            KEY_INNER_MERGE: self.inner_merge,
            KEY_ASSETS: list(self.assets),
            KEY_VALIDATION: self.validation,
            **({KEY_ENGINES: self.engines.to_dict()} if self.engines is not None else {}),
        }

    def write(self, folder: Path) -> Path:
        """Write ``folder/manifest.json`` by rename, so a reader never sees half a file (it is rewritten
        when engines are added)."""
        path = Path(folder) / MANIFEST_NAME
        tmp = path.with_name(f".{MANIFEST_NAME}.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n")
        tmp.replace(path)
        return path

    def all_graph_entries(self) -> list[GraphEntry]:
        entries = list(self.graphs.values())
        entries += [GraphEntry.from_dict(v["graph"]) for v in self.outer_merge.values()]
        entries += [GraphEntry.from_dict(v["graph"]) for v in self.inner_merge.values()]
        return entries


def inner_merge_key(ratio: float, mode: str) -> str:
    return f"{ratio:g}/{mode}"


def read_manifest(folder: str | Path, check_files: bool = True) -> Manifest:
    """Read and check ``folder/manifest.json``: format, major version, and every named file's size."""
    folder = Path(folder)
    path = folder / MANIFEST_NAME
    if not path.is_file():
        raise ManifestError(f"'{folder}' has no {MANIFEST_NAME}; it is not a holitom export. Create one with `holitom export --model DIR --out {folder}`.")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path} is not valid JSON ({exc}); re-export the model.") from exc
    if not isinstance(data, dict) or data.get(KEY_FORMAT) != FORMAT_NAME:
        raise ManifestError(f"{path} is not a holitom export manifest (format is {data.get(KEY_FORMAT) if isinstance(data, dict) else None!r}, expected '{FORMAT_NAME}').")
    version = str(data.get(KEY_FORMAT_VERSION, ""))
    if version.split(".")[0] != FORMAT_VERSION.split(".")[0]:
        raise ManifestError(
            f"{path} has format version {version!r}, but this toolkit reads major version {FORMAT_VERSION.split('.')[0]} "
            f"(format {FORMAT_VERSION}); re-export the model with this toolkit."
        )
    try:
        manifest = Manifest(
            toolkit_version=data[KEY_TOOLKIT_VERSION],
            source=data[KEY_SOURCE],
            model_config=data[KEY_MODEL_CONFIG],
            dims=ModelDims.from_dict(data[KEY_DIMS]),
            layout=data[KEY_LAYOUT],
            grid=tuple(data[KEY_GRID]),
            video_token_id=int(data[KEY_VIDEO_TOKEN_ID]),
            stop_token_ids=[int(t) for t in data[KEY_STOP_TOKEN_IDS]],
            precision=data[KEY_PRECISION],
            opset=int(data[KEY_OPSET]),
            graphs={k: GraphEntry.from_dict(v) for k, v in data[KEY_GRAPHS].items()},
            outer_merge=data[KEY_OUTER_MERGE],
            inner_merge=data[KEY_INNER_MERGE],
            assets=list(data[KEY_ASSETS]),
            validation=data.get(KEY_VALIDATION, {}),
            attention=str(data.get(KEY_ATTENTION, "standard")),
            engines=EngineSet.from_dict(data[KEY_ENGINES]) if KEY_ENGINES in data else None,
            format_version=version,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ManifestError(f"{path} is missing or has a malformed field ({exc!r}); re-export the model.") from exc
    from holitom.models.export_attention import FLAVORS

    if manifest.attention not in FLAVORS:
        raise ManifestError(f"{path} declares attention {manifest.attention!r}, which this toolkit does not know ({list(FLAVORS)}); re-export the model.")
    if check_files:
        _check_files(folder, manifest)
    return manifest


def _check_files(folder: Path, manifest: Manifest) -> None:
    for entry in manifest.all_graph_entries():
        for name, size in entry.sizes.items():
            file = folder / name
            if not file.is_file():
                raise ManifestError(f"graph file '{file}' named in the manifest is missing; re-export the model.")
            actual = file.stat().st_size
            if actual != size:
                raise ManifestError(
                    f"graph file '{file}' has {actual} bytes but the manifest records {size}: it is truncated or "
                    "was modified; re-export the model."
                )
    for name in manifest.assets:
        if not (folder / name).is_file():
            raise ManifestError(f"asset '{folder / name}' named in the manifest is missing; re-export the model.")
