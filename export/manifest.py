"""The export manifest: a versioned JSON file written next to the graphs.

The runtime reads only the manifest (and the files it names): model sizes,
merge configs, file names with their byte sizes and sha256 digests, I/O names,
dynamic axes, precision and the toolkit version. Keys are named constants so
writer and reader cannot drift apart (llama.cpp's ``clip-impl.h`` style).

Reading is the export folder's validation boundary: every field is checked for
its JSON type, every graph's declared I/O against the stage contract, and every
file against its recorded size and digest (see :mod:`holitom.export.digests`),
so a damaged folder is one ManifestError, never an AttributeError later.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from holitom.sources import MANIFEST_NAME
from holitom.contracts import ModelDims, StageSpec
from holitom.errors import EngineMismatchError, InputError, ManifestError
from holitom.limits import DTYPES
from holitom.plugins_trt.tensorrt_env import EngineTarget

FORMAT_NAME = "holitom-export"
# major.minor: a runtime reads any minor of its own major and refuses other majors.
# 1.2: a "files" table with each file's size and sha256 (required from 1.2 on).
# Optional from 1.2 on: an "engines" table once `holitom build-engines` ran.
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
KEY_FILES = "files"
# Advice for a damaged export folder (its own manifest says where it came from).
_REEXPORT = "export the model again with `holitom export --model CHECKPOINT --out NEW_FOLDER` (add --preset for each preset you need)"
KEY_ENGINES = "engines"  # TensorRT engines built beside the graphs (absent before 1.2 and until built)
# Optional from 1.2 on: how graphs were quantized (`holitom calibrate`); "precision" stays the I/O dtype.
KEY_QUANTIZATION = "quantization"


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
    files: dict[str, dict] = field(default_factory=dict)  # file name -> {"bytes": int, "sha256": hex}, every graph and asset
    attention: str = "standard"  # decoder prefill attention form (holitom.models.export_attention); absent before 1.1
    engines: EngineSet | None = None  # TensorRT engines, once `holitom build-engines` ran
    quantization: dict = field(default_factory=dict)  # per-graph precisions, calibration and its report (holitom.calibration)
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
            KEY_FILES: self.files,
            **({KEY_ENGINES: self.engines.to_dict()} if self.engines is not None else {}),
            **({KEY_QUANTIZATION: self.quantization} if self.quantization else {}),
        }

    def write(self, folder: Path) -> Path:
        """Write ``folder/manifest.json`` by rename, so a reader never sees half a file (it is rewritten
        when engines are added)."""
        path = Path(folder) / MANIFEST_NAME
        tmp = path.with_name(f".{MANIFEST_NAME}.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n")
        tmp.replace(path)
        return path

    @property
    def context_length(self) -> int:
        """Positions the decoder was trained for (prompt plus generated tokens)."""
        from holitom.models.config import LlavaConfig

        return LlavaConfig.from_dict(self.model_config).text.max_position_embeddings

    def all_graph_entries(self) -> list[GraphEntry]:
        entries = list(self.graphs.values())
        entries += [GraphEntry.from_dict(v["graph"]) for v in self.outer_merge.values()]
        entries += [GraphEntry.from_dict(v["graph"]) for v in self.inner_merge.values()]
        return entries


def inner_merge_key(ratio: float, mode: str) -> str:
    return f"{ratio:g}/{mode}"


def file_table(folder: Path, names: list[str]) -> dict[str, dict]:
    """``{name: {"bytes", "sha256"}}`` of files in ``folder`` (the exporter's half of the digest check)."""
    from holitom.export.digests import DIGEST_ALGORITHM, file_digest

    return {name: {"bytes": (folder / name).stat().st_size, DIGEST_ALGORITHM: file_digest(folder / name)} for name in names}


class _Fields:
    """Typed access to a parsed JSON object; any mismatch is a ManifestError naming the field."""

    def __init__(self, path: Path, fix: str):
        self.path, self.fix = path, fix

    def fail(self, where: str, what: str) -> ManifestError:
        return ManifestError(f"{self.path} has a malformed field '{where}' ({what}); {self.fix}")

    def get(self, obj: dict, key: str, kind: type | tuple[type, ...], where: str = "", default=...):
        where = f"{where}.{key}" if where else key
        if key not in obj:
            if default is not ...:
                return default
            raise self.fail(where, "missing")
        value = obj[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            names = " or ".join(k.__name__ for k in kinds)
            raise self.fail(where, f"expected {names}, got {type(value).__name__}")
        return value

    def int_list(self, obj: dict, key: str, where: str = "") -> list[int]:
        values = self.get(obj, key, list, where)
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            raise self.fail(f"{where}.{key}" if where else key, "expected a list of integers")
        return values

    def file_name(self, value: str, where: str) -> str:
        # A plain name inside the folder: a manifest must not point the runtime at other files.
        if not value or value in (".", "..") or "/" in value or "\\" in value or "\x00" in value:
            raise self.fail(where, f"{value!r} is not a plain file name inside the export folder")
        return value

    def graph(self, obj, where: str) -> GraphEntry:
        if not isinstance(obj, dict):
            raise self.fail(where, f"expected object, got {type(obj).__name__}")
        io = {}
        for which in ("inputs", "outputs"):
            tensors = self.get(obj, which, list, where)
            for i, t in enumerate(tensors):
                at = f"{where}.{which}[{i}]"
                if not isinstance(t, dict):
                    raise self.fail(at, f"expected object, got {type(t).__name__}")
                self.get(t, "name", str, at)
                self.get(t, "dtype", str, at)
                shape = self.get(t, "shape", list, at)
                if not all(isinstance(d, (int, str)) and not isinstance(d, bool) for d in shape):
                    raise self.fail(f"{at}.shape", "expected integers and dimension names")
            io[which] = tensors
        sizes = self.get(obj, "sizes", dict, where)
        for name, size in sizes.items():
            self.file_name(name, f"{where}.sizes")
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise self.fail(f"{where}.sizes.{name}", "expected a byte count")
        return GraphEntry(
            file=self.file_name(self.get(obj, "file", str, where), f"{where}.file"),
            inputs=io["inputs"],
            outputs=io["outputs"],
            dynamic_axes=self.get(obj, "dynamic_axes", dict, where),
            sizes=sizes,
        )


def _check_against_contract(entry: GraphEntry, spec: StageSpec, where: str, fields: _Fields) -> None:
    """The graph entry declares exactly the stage contract's I/O (names, dtypes, shapes)."""
    for which, tensors in (("inputs", spec.inputs), ("outputs", spec.outputs)):
        want = [{"name": t.name, "dtype": t.dtype, "shape": list(t.shape)} for t in tensors]
        got = getattr(entry, which)
        if got != want:
            got_names, want_names = [t["name"] for t in got], [t["name"] for t in want]
            detail = (
                f"names {got_names}, expected {want_names}"
                if got_names != want_names
                else "; ".join(f"{g['name']}: {g['dtype']} {g['shape']}, expected {w['dtype']} {w['shape']}" for g, w in zip(got, want) if g != w)
            )
            raise fields.fail(f"{where}.{which}", f"does not match the '{spec.name}' stage contract: {detail}")


def read_manifest(folder: str | Path, check_files: bool = True, fix: str = _REEXPORT) -> Manifest:
    """Read and check ``folder/manifest.json``: format, version, every field's type, every graph's I/O
    against the stage contract and (``check_files``) every named file's size and sha256.

    ``fix`` is the advice every ManifestError ends with (the runtime's own cache
    rebuilds a damaged entry itself instead of asking the user).
    """
    from holitom import contracts as C
    from holitom.errors import CheckpointError, ConfigError
    from holitom.paths import existing_path

    folder = existing_path(folder, "export folder", want="dir", error=ManifestError)
    path = folder / MANIFEST_NAME
    if not path.is_file():
        raise ManifestError(f"'{folder}' has no {MANIFEST_NAME}; it is not a holitom export. Create one with `holitom export --model DIR --out {folder}`.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path} is not valid JSON ({exc}); {fix}.") from exc
    except OSError as exc:
        from holitom.paths import describe_os_error

        raise ManifestError(f"{path} cannot be read: {describe_os_error(exc)}.") from None
    if not isinstance(data, dict) or data.get(KEY_FORMAT) != FORMAT_NAME:
        raise ManifestError(f"{path} is not a holitom export manifest (format is {data.get(KEY_FORMAT) if isinstance(data, dict) else None!r}, expected '{FORMAT_NAME}').")
    version = str(data.get(KEY_FORMAT_VERSION, ""))
    if version.split(".")[0] != FORMAT_VERSION.split(".")[0]:
        raise ManifestError(
            f"{path} has format version {version!r}, but this toolkit reads major version {FORMAT_VERSION.split('.')[0]} "
            f"(format {FORMAT_VERSION}); {fix}."
        )
    f = _Fields(path, fix + ".")
    if KEY_FILES not in data:
        raise ManifestError(
            f"{path} (format {version}) records no content digests of its files, so they cannot be checked; {fix} "
            "with this toolkit."
        )
    from holitom.models.config import LlavaConfig

    try:
        llava = LlavaConfig.from_dict(f.get(data, KEY_MODEL_CONFIG, dict))
    except (CheckpointError, ConfigError, TypeError, ValueError) as exc:
        raise f.fail(KEY_MODEL_CONFIG, str(exc)) from None
    dims_data = f.get(data, KEY_DIMS, dict)
    try:
        dims = ModelDims.from_dict({k: f.get(dims_data, k, int, KEY_DIMS) for k in ModelDims.__dataclass_fields__ if k != "extra"})
    except InputError as exc:
        raise f.fail(KEY_DIMS, str(exc)) from None
    precision = f.get(data, KEY_PRECISION, str)
    if precision not in DTYPES:
        raise f.fail(KEY_PRECISION, f"{precision!r} is not {', '.join(DTYPES[:-1])} or {DTYPES[-1]}")
    grid = f.int_list(data, KEY_GRID)
    if len(grid) != 2:
        raise f.fail(KEY_GRID, f"expected [rows, columns], got {grid}")
    specs = C.stage_specs(dims, precision)
    graphs = {}
    for stage, entry in f.get(data, KEY_GRAPHS, dict).items():
        if stage not in (C.VISION, C.EMBED, C.DECODER_HEAD, C.DECODER_TAIL, C.DECODE_STEP):
            raise f.fail(f"{KEY_GRAPHS}.{stage}", "not a stage with a graph of its own")
        graphs[stage] = f.graph(entry, f"{KEY_GRAPHS}.{stage}")
    missing = [s for s in (C.VISION, C.EMBED, C.DECODER_HEAD, C.DECODER_TAIL, C.DECODE_STEP) if s not in graphs]
    if missing:
        raise f.fail(KEY_GRAPHS, f"no graphs for stages {missing}")
    outer = f.get(data, KEY_OUTER_MERGE, dict)
    inner = f.get(data, KEY_INNER_MERGE, dict)
    entries = dict(graphs)
    for table, key, stage in ((outer, KEY_OUTER_MERGE, C.OUTER_MERGE), (inner, KEY_INNER_MERGE, C.INNER_MERGE)):
        for name, item in table.items():
            where = f"{key}.{name}"
            if not isinstance(item, dict):
                raise f.fail(where, f"expected object, got {type(item).__name__}")
            entries[where] = f.graph(f.get(item, "graph", dict, where), f"{where}.graph")
            _check_against_contract(entries[where], specs[stage], where, f)
            if key == KEY_OUTER_MERGE:
                from holitom.merge import MergeConfig

                try:
                    MergeConfig.from_dict(f.get(item, "merge", dict, where))
                except (ConfigError, TypeError, ValueError) as exc:
                    raise f.fail(f"{where}.merge", str(exc)) from None
            else:
                f.get(item, "ratio", (int, float), where)
                f.get(item, "mode", str, where)
    if C.KV_LENGTHS in graphs[C.DECODE_STEP].input_names:  # an --attention onnxruntime export's decode step
        specs[C.DECODE_STEP] = C.kv_buffer_decode_spec(specs[C.DECODE_STEP])
    for stage, entry in graphs.items():
        _check_against_contract(entry, specs[stage], f"{KEY_GRAPHS}.{stage}", f)
    assets = [f.file_name(a, KEY_ASSETS) if isinstance(a, str) else None for a in f.get(data, KEY_ASSETS, list)]
    if None in assets:
        raise f.fail(KEY_ASSETS, "expected a list of file names")
    files = f.get(data, KEY_FILES, dict)
    from holitom.export.digests import DIGEST_ALGORITHM

    for name, item in files.items():
        where = f"{KEY_FILES}.{f.file_name(name, KEY_FILES)}"
        if not isinstance(item, dict):
            raise f.fail(where, f"expected object, got {type(item).__name__}")
        size = f.get(item, "bytes", int, where)
        digest = f.get(item, DIGEST_ALGORITHM, str, where)
        if size < 0 or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise f.fail(where, f"expected a byte count and a hex {DIGEST_ALGORITHM}")
    named = [n for e in entries.values() for n in e.sizes] + [e.file for e in entries.values()] + assets
    unlisted = sorted({n for n in named if n not in files})
    if unlisted:
        raise f.fail(KEY_FILES, f"no digest for {unlisted}")
    for e in entries.values():
        for name, size in e.sizes.items():
            if files[name]["bytes"] != size:
                raise f.fail(KEY_FILES, f"{name} has {files[name]['bytes']} bytes there but {size} in its graph entry")

    engines = None
    if KEY_ENGINES in data:
        try:
            engines = EngineSet.from_dict(f.get(data, KEY_ENGINES, dict))
        except (KeyError, TypeError, ValueError) as exc:
            raise f.fail(KEY_ENGINES, f"malformed ({exc!r})") from None
    manifest = Manifest(
        toolkit_version=f.get(data, KEY_TOOLKIT_VERSION, str),
        source=f.get(data, KEY_SOURCE, dict),
        model_config=data[KEY_MODEL_CONFIG],
        dims=dims,
        layout=f.get(data, KEY_LAYOUT, str),
        grid=(grid[0], grid[1]),
        video_token_id=f.get(data, KEY_VIDEO_TOKEN_ID, int),
        stop_token_ids=f.int_list(data, KEY_STOP_TOKEN_IDS),
        precision=precision,
        opset=f.get(data, KEY_OPSET, int),
        graphs=graphs,
        outer_merge=outer,
        inner_merge=inner,
        assets=assets,
        validation=f.get(data, KEY_VALIDATION, dict, default={}),
        files=files,
        engines=engines,
        quantization=f.get(data, KEY_QUANTIZATION, dict, default={}),
        attention=f.get(data, KEY_ATTENTION, str, default="standard"),
        format_version=version,
    )
    if manifest.layout != llava.layout:
        raise f.fail(KEY_LAYOUT, f"{manifest.layout!r}, but the model config's layout is {llava.layout!r}")
    from holitom.models.facts import ATTENTION_FLAVORS as FLAVORS

    if manifest.attention not in FLAVORS:
        raise ManifestError(f"{path} declares attention {manifest.attention!r}, which this toolkit does not know ({list(FLAVORS)}); {fix}.")
    if check_files:
        from holitom.export.digests import verify_files

        verify_files(folder, files, path, fix + ".")
    return manifest

