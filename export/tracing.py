"""One way to turn a torch module into an ONNX graph: ``torch.onnx.export`` (dynamo) with the stage contract's names.

Every exported graph goes through :func:`export_module`: the model stages
(:mod:`.exporter`) and the HoliTom merge graphs (:mod:`.holitom_onnx`), whose
torch code in :mod:`holitom.merge` is exported as it is.

:data:`TRANSLATIONS` supplies the ONNX form of aten ops that the exporter has
no translation for and that the merge code needs:

- ``aten.sort.stable``: ONNX ``TopK`` over the whole axis with ``sorted=1``,
  which the ONNX spec defines to put the lower index first among equal values:
  exactly a stable sort, descending (``largest=1``) or ascending.
- ``aten.index_add`` (rows, ``dim=0``): ``ScatterElements(reduction="add")``
  over the row index expanded to the source's shape, instead of the exporter's
  ``ScatterND(reduction="add")``, which TensorRT 10.3 (JetPack 6) does not
  support (``holitom check-ops``).
"""

from __future__ import annotations

import contextlib
import inspect
import io
import warnings

import torch
from onnxscript import opset18 as op

from holitom import contracts as C
from holitom.errors import ExportError
from holitom.export.onnx_io import name_dynamic_dims


def _sort_stable(self, stable: bool = True, dim: int = -1, descending: bool = False):
    size = op.Gather(op.Shape(self), op.Constant(value_ints=[dim]))  # (1,) the axis length: sort all of it
    values, indices = op.TopK(self, size, axis=dim, largest=descending, sorted=True)
    return values, indices


def _index_add(self, dim: int, index, source, alpha: float = 1.0):
    if dim != 0 or alpha != 1.0:
        raise NotImplementedError(f"index_add is translated for dim=0, alpha=1 (the merge code's use), got dim={dim}, alpha={alpha}")
    rows = op.Unsqueeze(index, op.Constant(value_ints=[1]))  # (E, 1)
    return op.ScatterElements(self, op.Expand(rows, op.Shape(source)), source, axis=0, reduction="add")


TRANSLATIONS = {torch.ops.aten.sort.stable: _sort_stable, torch.ops.aten.index_add.default: _index_add}


def export_module(module: torch.nn.Module, args: tuple, spec: C.StageSpec, opset: int):
    """torch.onnx (dynamo) export with the contract's names and named dynamic axes; returns the ModelProto."""
    dims: dict[str, torch.export.Dim] = {}

    def dim(name: str):
        if name not in dims:
            dims[name] = torch.export.Dim(name)
        return dims[name]

    flat = [{axis: dim(n) for axis, n in t.dynamic_axes.items()} or None for t in spec.inputs]
    # torch.export wants the structure of forward's signature: a *varargs parameter is one nested tuple.
    params = list(inspect.signature(module.forward).parameters.values())
    var_at = next((i for i, p in enumerate(params) if p.kind is inspect.Parameter.VAR_POSITIONAL), None)
    dynamic_shapes = tuple(flat) if var_at is None else (*flat[:var_at], tuple(flat[var_at:]))
    sink = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                module,
                args,
                None,
                input_names=spec.input_names,
                output_names=spec.output_names,
                dynamic_shapes=dynamic_shapes,
                dynamo=True,
                opset_version=opset,
                optimize=True,
                verbose=False,
                custom_translation_table=TRANSLATIONS,
            )
    except Exception as exc:  # the exporter raises many types; keep its message, add the stage
        raise ExportError(f"exporting stage '{spec.name}' failed: {type(exc).__name__}: {exc}".strip()) from exc
    model = program.model_proto
    name_dynamic_dims(model, spec)
    return model


__all__ = ["TRANSLATIONS", "export_module"]
