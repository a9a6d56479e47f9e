"""Packaging contracts: the namespace mapping is complete and `import holitom` stays light."""

from __future__ import annotations

import tomllib
from pathlib import Path

from lean_imports import imported_by  # tests/ helper (tests/conftest.py puts it on sys.path)

ROOT = Path(__file__).resolve().parents[1]


def _declared_packages() -> tuple[list[str], dict[str, str]]:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return cfg["packages"], cfg["package-dir"]


def test_every_package_folder_is_declared():
    packages, package_dir = _declared_packages()
    found = set()
    for top_name, folder in package_dir.items():
        base = ROOT / folder
        for init in base.rglob("__init__.py"):
            rel = init.parent.relative_to(base)
            found.add(".".join([top_name, *rel.parts]))
    missing = sorted(found - set(packages))
    assert not missing, f"add these packages to [tool.setuptools].packages in pyproject.toml: {missing}"
    absent = sorted(p for p in packages if p not in found)
    assert not absent, f"pyproject.toml lists packages without an __init__.py: {absent}"


def test_no_generic_top_level_names_installed():
    packages, _ = _declared_packages()
    assert all(p == "holitom" or p.startswith("holitom.") for p in packages)


def test_import_holitom_is_light():
    heavy = imported_by("import holitom, holitom.errors", ("torch", "onnxruntime", "tensorrt", "triton", "onnx", "transformers"))
    assert heavy == [], f"`import holitom` pulled in heavy modules: {heavy}"


def test_the_edge_runtime_modules_import_no_torch():
    """What `holitom run --backend onnxruntime` on an export folder imports (the CLI, configs, pipeline, backend,
    tokenizer, preprocessor, manifest) pulls in neither torch nor transformers; the run itself is checked in
    tests/runtime/test_edge_install.py."""
    code = (
        "from holitom.cli import build_parser\n"
        "build_parser().parse_args(['run', '--video', 'x.mp4', '--prompt', 'hi'])\n"
        "from holitom.runtime import RuntimeConfig, load_pipeline\n"
        "RuntimeConfig(backend='onnxruntime', preset='r15')\n"
        "import holitom.runtime.pipeline, holitom.runtime.backends.onnxruntime, holitom.runtime.backends.export_folder\n"
        "import holitom.chat_tokenizer, holitom.video.preprocess_np, holitom.export.manifest, holitom.merge"
    )
    heavy = imported_by(code, ("torch", "transformers", "onnx", "safetensors"))
    assert heavy == [], f"the edge runtime's modules pulled in {heavy}"
