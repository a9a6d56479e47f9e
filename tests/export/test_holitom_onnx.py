"""The HoliTom ONNX graphs (holitom.export.holitom_onnx) against the PyTorch reference (holitom.merge).

- Parity: ONNX Runtime (CPU, no custom-op library) runs the exported files as
  they are and must take every decision the reference takes (token counts,
  frame / position of every output row, kept positions) and produce the same
  values within float32 tolerance, on random videos with planted static
  regions (so the DP windows vary), edge cases, and the two real grids.
- Structure: the HoliTom ops are custom-domain nodes named as in
  plugins_trt.ops, backed by ONNX local functions of default-domain ops only;
  the files pass onnx.checker (full check) and match their I/O declaration.
- Completeness: every op in plugins_trt.ops has a contract, a reference, an
  ONNX function and a parity case here.

Tolerances (float32): merged tokens / hidden states atol 1e-5, because the
graphs sum in a different order than the reference (measured: < 1e-6 on the
random cases, ~3e-6 with hundreds of duplicate tokens in one cluster; failure
messages print the max errors). Every index and count output must be identical.
The decisions are float32 comparisons, so a near-tie within one ulp (say two
densities that differ in the last bit) may go either way with another BLAS;
the seeds here hold none (a 200-case stress run met one, in a frame full of
duplicated zero tokens), and a failure names the case.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from holitom import contracts as C
from holitom.limits import MIN_OPSET
from holitom.errors import ConfigError, ExportError
from holitom.export import holitom_onnx as H
from holitom.merge import (
    MergeConfig,
    apply_inner_merge,
    get_preset,
    outer_merge,
    plan_inner_merge,
    plan_outer_merge,
)
from holitom.plugins_trt import ops as O

from custom_op_model import build_custom_op_model, run_reference_op

TOKENS_ATOL = 1e-5
HIDDEN_ATOL = 1e-5

OUTER_CONFIGS = {
    "r10": get_preset("r10-outer"),  # r = 0.10, tau = 0.65 (paper)
    "r25": get_preset("r25-outer"),  # r = 0.25, tau = 0.80 (paper)
    "contextual": MergeConfig(retain_ratio=0.2, tau=0.7, contextual_frac=0.4),
    # every attribute off its default, windows capped, budget all contextual
    "window3": MergeConfig(retain_ratio=0.15, tau=0.75, beta=0.3, contextual_frac=1.0, k_nn=3, max_window=3),
}
LAYOUTS = ("onevision", "llava_video")
OUTER_OUTPUTS = ("merged_tokens", H.FRAME_INDEX, H.POSITION_INDEX)


# --------------------------------------------------------------------------- helpers


@functools.lru_cache(maxsize=None)
def outer_session(config: MergeConfig, grid: tuple[int, int], layout: str, hidden: int, opset: int = H.DEFAULT_OPSET):
    model = H.build_outer_merge_model(config, grid, layout, hidden, opset=opset, metadata=True)
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


@functools.lru_cache(maxsize=None)
def inner_session(mode: str, ratio: float, hidden: int, opset: int = H.DEFAULT_OPSET):
    model = H.build_inner_merge_model(mode, ratio, hidden, opset=opset)
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


@functools.lru_cache(maxsize=None)
def op_session(name: str, attributes: tuple):
    return ort.InferenceSession(build_custom_op_model(name, **dict(attributes)).SerializeToString(), providers=["CPUExecutionProvider"])


def make_video(rng: np.random.Generator, frames: int, positions: int, hidden: int, kind: str = "planted"):
    """(features (F, P, D), attention (F, P), newline (D,)) float32.

    ``planted``: noise plus a few static regions (random frame ranges x random
    position subsets hold one token plus 5% noise, cosine ~0.999 > tau), which
    overlap, so windows of many lengths win the DP. ``identical``: every frame
    equals the first. ``noise``: nothing static. ``duplicates``: a "letterbox"
    of positions sharing one exact vector in every frame, plus all-zero tokens
    (exact zero distances and zero norms: the tie rules and eps guards).
    """
    x = rng.standard_normal((frames, positions, hidden), dtype=np.float32)
    if kind == "planted":
        for _ in range(int(rng.integers(1, 5))):
            start = int(rng.integers(frames))
            end = min(frames - 1, start + int(rng.integers(0, 12)))
            where = rng.random(positions) < rng.uniform(0.1, 0.9)
            noise = 0.05 * rng.standard_normal((end - start + 1, int(where.sum()), hidden), dtype=np.float32)
            x[start : end + 1, where] = x[start, where] + noise
    elif kind == "identical":
        x[:] = x[0]
    elif kind == "duplicates":
        x[:, rng.random(positions) < 0.4] = rng.standard_normal(hidden, dtype=np.float32)
        x[:, rng.random(positions) < 0.2] = 0.0
    elif kind != "noise":
        raise ValueError(kind)
    attention = rng.random((frames, positions), dtype=np.float32)
    if rng.random() < 0.3:
        attention = np.round(attention * 4) / 4  # equal scores: the lower position must win
    return x, attention.astype(np.float32), rng.standard_normal(hidden, dtype=np.float32)


@dataclass
class Parity:
    """Per-output comparison of one case; collects every failing output with its max error (STYLE.md 7)."""

    label: str
    failures: list[str]
    max_error: dict[str, float]

    def compare(self, name: str, got: np.ndarray, want: np.ndarray, atol: float | None) -> None:
        if got.shape != want.shape:
            self.failures.append(f"{self.label}: {name} has shape {got.shape}, reference {want.shape}")
            return
        if atol is None:  # indices / counts: identical
            wrong = int((got != want).sum())
            if wrong:
                self.failures.append(f"{self.label}: {name} differs in {wrong} of {got.size} entries")
            return
        err = float(np.abs(got.astype(np.float64) - want.astype(np.float64)).max(initial=0.0))
        self.max_error[name] = max(self.max_error.get(name, 0.0), err)
        if not np.isfinite(got).all() or err > atol:
            self.failures.append(f"{self.label}: {name} max abs error {err:.3g} > atol {atol:g}")


def plan_tokens_float64(x: np.ndarray, plan, newline: np.ndarray) -> np.ndarray:
    """The reference plan's linear map evaluated in float64 (an oracle free of float32 summation order)."""
    flat = torch.from_numpy(x).double().reshape(-1, x.shape[-1])  # (F*P, D)
    out = torch.zeros(plan.num_rows, x.shape[-1], dtype=torch.float64)
    out.index_add_(0, plan.dst_index, flat[plan.src_index] * plan.weight.double()[:, None])
    out[plan.newline_index] = torch.from_numpy(newline).double()
    return out.numpy()


def check_outer_case(parity: Parity, config, grid, layout, x, attention, newline, *, oracle: str = "float32"):
    """Run one video through ONNX Runtime and the reference; record mismatches in ``parity``.

    ``oracle="float64"`` compares the tokens with the reference plan evaluated in
    float64 instead of the reference's float32 apply: with clusters of hundreds
    of identical tokens the reference's sequential float32 sum itself drifts
    by ~1e-5 (see test_large_clusters_match_the_exact_plan).
    """
    session = outer_session(config, grid, layout, x.shape[-1])
    got = dict(zip(OUTER_OUTPUTS, session.run(None, {"features": x, "attention": attention, "image_newline": newline})))
    result = outer_merge(torch.from_numpy(x), torch.from_numpy(attention), config, grid, layout, torch.from_numpy(newline))
    tokens = result.tokens.numpy() if oracle == "float32" else plan_tokens_float64(x, result.plan, newline)
    parity.compare(H.FRAME_INDEX, got[H.FRAME_INDEX], result.plan.frame_index.numpy(), None)
    parity.compare(H.POSITION_INDEX, got[H.POSITION_INDEX], result.plan.position_index.numpy(), None)
    parity.compare("merged_tokens", got["merged_tokens"], tokens, TOKENS_ATOL)
    return got, result


def helper_value(attribute: onnx.AttributeProto):
    value = onnx.helper.get_attribute_value(attribute)
    return value.decode() if attribute.type == onnx.AttributeProto.STRING else value


def assert_parity(parity: Parity) -> None:
    assert not parity.failures, f"{len(parity.failures)} mismatches (max errors {parity.max_error}):\n" + "\n".join(parity.failures)


# --------------------------------------------------------------------------- outer merge parity


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("config_name", list(OUTER_CONFIGS))
def test_outer_merge_matches_reference_on_random_videos(config_name, layout):
    """14 random videos per (config, layout): 112 cases, F in 1..24, two small grids, planted static regions."""
    config = OUTER_CONFIGS[config_name]
    rng = np.random.default_rng([sum(map(ord, config_name)), len(layout)])
    parity = Parity(f"{config_name}/{layout}", [], {})
    windows_seen = set()
    for case in range(14):
        grid = ((3, 4), (4, 5))[case % 2]
        frames = int(rng.integers(1, 25))
        x, attention, newline = make_video(rng, frames, grid[0] * grid[1], 8)
        parity.label = f"{config_name}/{layout} case {case} (F={frames}, grid={grid})"
        _, result = check_outer_case(parity, config, grid, layout, x, attention, newline)
        windows_seen |= {int(e - s + 1) for s, e in result.plan.windows.tolist()}
    assert_parity(parity)
    assert max(windows_seen) >= 3, f"the planted videos should give multi-frame windows; saw lengths {sorted(windows_seen)}"


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("grid", [(14, 14), (13, 13)], ids=["onevision196", "video169"])
def test_outer_merge_matches_reference_on_real_grids(grid, layout):
    """The real pooled grids (P = 196 and 169) with the paper's r = 0.10 setting."""
    config = OUTER_CONFIGS["r10"]
    rng = np.random.default_rng(grid[0])
    x, attention, newline = make_video(rng, 12, grid[0] * grid[1], 16)
    parity = Parity(f"grid {grid} / {layout}", [], {})
    check_outer_case(parity, config, grid, layout, x, attention, newline)
    assert_parity(parity)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("kind", ["identical", "noise", "single_frame", "keep_all"])
def test_outer_merge_edge_cases(kind, layout):
    """1 frame, all frames identical, pure noise, r = 1; several configs each."""
    rng = np.random.default_rng(len(kind))
    grid = (4, 5)
    parity = Parity(f"{kind}/{layout}", [], {})
    configs = dict(OUTER_CONFIGS)
    if kind == "keep_all":
        configs = {"r1": MergeConfig(retain_ratio=1.0, tau=0.8), "r1ctx": MergeConfig(retain_ratio=1.0, contextual_frac=0.5)}
    for name, config in configs.items():
        for frames in (1, 2, 9):
            if kind == "single_frame" and frames != 1:
                continue
            video_kind = {"identical": "identical", "noise": "noise"}.get(kind, "planted")
            # D = 64 for noise: random directions then have cosine > 0.65 with probability ~1e-9
            x, attention, newline = make_video(rng, frames, 20, 64 if kind == "noise" else 8, video_kind)
            parity.label = f"{kind}/{layout}/{name} F={frames}"
            _, result = check_outer_case(parity, config, grid, layout, x, attention, newline)
            if kind == "identical" and frames > 1:  # the longest windows allowed; every position static
                limit = config.max_window or frames
                assert result.plan.windows.shape[0] == -(-frames // limit)
                assert bool(result.plan.temporal.static[: min(frames, limit)].all())
            if kind == "noise":  # nothing static: single-frame windows only
                assert result.plan.windows.shape[0] == frames
            if kind == "keep_all" and name == "r1":
                # r = 1 keeps every dynamic token and one token per static position and window
                plan = result.plan
                assert plan.num_visual_tokens == frames * 20 - plan.temporal.removed
    assert_parity(parity)


def test_large_clusters_match_the_exact_plan():
    """Letterboxed / black regions: hundreds of identical tokens, zero tokens, exact distance ties.

    Every decision must still be identical. The values are compared with the
    reference plan evaluated in float64: float32 sums of ~600 identical edges
    into one row legitimately differ by ~1e-5 depending on summation order
    (the reference's ``apply_outer_merge``, one sequential embedding_bag sum per
    row, drifts from the exact value by up to 6e-5 on these inputs; the graph's
    two-level sum, window mean then cluster, stays within a few 1e-6).
    """
    rng = np.random.default_rng(7)
    parity = Parity("duplicates", [], {})
    for config_name in ("r10", "contextual"):
        for layout in LAYOUTS:
            for grid, frames in (((14, 14), 6), ((4, 5), 11)):
                x, attention, newline = make_video(rng, frames, grid[0] * grid[1], 16, "duplicates")
                parity.label = f"duplicates {config_name}/{layout}/{grid} F={frames}"
                check_outer_case(parity, OUTER_CONFIGS[config_name], grid, layout, x, attention, newline, oracle="float64")
    assert_parity(parity)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_apply_scatters_numbers_not_rows(layout):
    """The exported apply is two MatMuls: no ScatterElements of the main graph writes rows of the hidden size (an
    ``index_add`` over (edges, D), which onnxruntime's CPU kernel walks element by element), and the parity tests
    above check its values."""
    hidden = 6
    model = H.build_outer_merge_model(OUTER_CONFIGS["r10"], (3, 4), layout, hidden)
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {v.name: [d.dim_value or d.dim_param for d in v.type.tensor_type.shape.dim] for v in inferred.graph.value_info}
    scatters = [node for node in model.graph.node if node.op_type == "ScatterElements"]
    assert scatters and all(node.input[0] in shapes for node in scatters)
    assert [shapes[node.input[0]] for node in scatters if shapes[node.input[0]][-1:] == [hidden]] == []
    assert ("", "MatMul") in H.onnx_op_types(model)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_vanilla_config_keeps_every_token(layout):
    """retain_ratio=None: all tokens in order with the layout's newlines, no custom op, and a gather of the rows
    rather than the weighted scatter over (edges, D) (onnxruntime walks that element by element)."""
    config = get_preset("none")
    model = H.build_outer_merge_model(config, (3, 4), layout, 6, metadata=True)
    assert all(domain == "" for domain, _ in H.onnx_op_types(model)) and not model.functions
    assert ("", "ScatterElements") not in H.onnx_op_types(model)
    rng = np.random.default_rng(3)
    parity = Parity(f"vanilla/{layout}", [], {})
    for frames in (1, 4):
        x, attention, newline = make_video(rng, frames, 12, 6)
        check_outer_case(parity, config, (3, 4), layout, x, attention, newline)
    assert_parity(parity)


@pytest.mark.parametrize("opset", [MIN_OPSET, 21])
def test_outer_merge_other_opsets(opset):
    rng = np.random.default_rng(opset)
    parity = Parity(f"opset {opset}", [], {})
    config = OUTER_CONFIGS["contextual"]
    for layout in LAYOUTS:
        x, attention, newline = make_video(rng, 10, 20, 8)
        session = outer_session(config, (4, 5), layout, 8, opset)
        got = session.run(None, {"features": x, "attention": attention, "image_newline": newline})
        result = outer_merge(torch.from_numpy(x), torch.from_numpy(attention), config, (4, 5), layout, torch.from_numpy(newline))
        parity.compare(H.POSITION_INDEX, got[2], result.plan.position_index.numpy(), None)
        parity.compare("merged_tokens", got[0], result.tokens.numpy(), TOKENS_ATOL)
    assert_parity(parity)


# --------------------------------------------------------------------------- inner merge parity


def run_inner_case(parity: Parity, mode: str, ratio: float, rng: np.random.Generator, seq: int, span: tuple[int, int]):
    hidden = rng.standard_normal((1, seq, 16), dtype=np.float32)
    start, end = span
    scores = rng.random(end - start, dtype=np.float32)
    if rng.random() < 0.3:
        scores = (np.round(scores * 3) / 3).astype(np.float32)  # ties: the lower index is kept
    position_ids = (np.arange(seq, dtype=np.int64) * 3 + 5)[None]  # not 0..S-1, so gathering is checked
    got_hidden, got_pos = inner_session(mode, ratio, 16).run(
        None,
        {"hidden_states": hidden, "attn_row": scores, "position_ids": position_ids, "visual_span": np.array(span, dtype=np.int64)},
    )
    h = torch.from_numpy(hidden)
    plan = plan_inner_merge(torch.from_numpy(scores), h[0, start:end], ratio)
    want_hidden, kept_index = apply_inner_merge(h, span, plan, mode)
    parity.compare("merged_position_ids", got_pos, position_ids[:, kept_index.numpy()], None)
    parity.compare("merged_hidden_states", got_hidden, want_hidden.numpy(), HIDDEN_ATOL)


@pytest.mark.parametrize("mode", ["sequential", "mean"])
def test_inner_merge_matches_reference(mode):
    """60 random prompts per mode over R in {0, 0.25, 0.5, 0.75, 0.9}: spans anywhere, ties, empty spans."""
    rng = np.random.default_rng(len(mode))
    parity = Parity(mode, [], {})
    for ratio in (0.0, 0.25, 0.5, 0.75, 0.9):
        for case in range(12):
            seq = int(rng.integers(1, 90))
            start = int(rng.integers(0, seq))
            end = int(rng.integers(start, seq + 1)) if case else start  # case 0: no visual token at all
            parity.label = f"{mode} R={ratio} case {case} (S={seq}, span=({start}, {end}))"
            run_inner_case(parity, mode, ratio, rng, seq, (start, end))
    assert_parity(parity)


def test_inner_merge_ratio_zero_is_identity():
    rng = np.random.default_rng(0)
    hidden = rng.standard_normal((1, 30, 16), dtype=np.float32)
    position_ids = np.arange(30, dtype=np.int64)[None]
    feed = {"hidden_states": hidden, "attn_row": rng.random(20, dtype=np.float32), "position_ids": position_ids, "visual_span": np.array([4, 24])}
    for mode in ("sequential", "mean"):
        got_hidden, got_pos = inner_session(mode, 0.0, 16).run(None, feed)
        np.testing.assert_array_equal(got_hidden, hidden)
        np.testing.assert_array_equal(got_pos, position_ids)


def test_inner_merge_sequential_closed_form_by_hand():
    """One kept token with members 1 < 2: ((h0 + h1) / 2 + h2) / 2 = h0/4 + h1/4 + h2/2."""
    hidden = np.array([[[1.0, 0.0], [3.0, 1.0], [5.0, 1.0], [0.0, 9.0]]], dtype=np.float32)  # (1, 4, 2)
    feed = {
        "hidden_states": hidden,
        "attn_row": np.array([0.9, 0.1, 0.2], dtype=np.float32),  # visual tokens 0..2: token 0 kept
        "position_ids": np.array([[10, 11, 12, 13]]),
        "visual_span": np.array([0, 3]),
    }
    got_hidden, got_pos = inner_session("sequential", 0.6, 2).run(None, feed)  # keep round(3 * 0.4) = 1
    np.testing.assert_allclose(got_hidden[0], [[1 / 4 + 3 / 4 + 5 / 2, 1 / 4 + 1 / 2], [0.0, 9.0]], rtol=0, atol=1e-6)
    np.testing.assert_array_equal(got_pos, [[10, 13]])


# --------------------------------------------------------------------------- custom ops


def temporal_segment_case(rng):
    frames = int(rng.integers(1, 16))
    x, _, _ = make_video(rng, frames, 11, 6)
    return {"features": x}, {"tau": 0.7, "max_window": int(rng.integers(0, 4))}


def density_peak_merge_case(rng):
    groups, slots = int(rng.integers(1, 5)), int(rng.integers(1, 40))
    tokens = rng.standard_normal((groups, slots, 6), dtype=np.float32)
    if rng.random() < 0.3:
        tokens[:, rng.random(slots) < 0.5] = tokens[:, :1]  # exact duplicates within each group
    valid = rng.random((groups, slots)) < rng.uniform(0.2, 1.0)
    clusters = np.array([rng.integers(0, v.sum() + 1) for v in valid], dtype=np.int64)
    return {"tokens": tokens, "valid": valid, "num_clusters": clusters}, {"k_nn": int(rng.integers(1, 9)), "beta": 0.6}


# Parity cases of every custom op: op name -> generator of (inputs, attributes).
OP_CASES = {
    O.TEMPORAL_SEGMENT: temporal_segment_case,
    O.DENSITY_PEAK_MERGE: density_peak_merge_case,
}


@pytest.mark.parametrize("name", sorted(O.OP_CONTRACTS))
def test_custom_op_function_matches_reference_op(name):
    """Each custom op alone: its ONNX local function in ORT vs REFERENCE_OPS[name], 40 random cases."""
    assert name in OP_CASES, f"add a parity case for custom op {name} to OP_CASES"
    contract = O.get_contract(name)
    rng = np.random.default_rng(sum(map(ord, name)))
    parity = Parity(name, [], {})
    for case in range(40):
        inputs, attributes = OP_CASES[name](rng)
        got = dict(zip(contract.output_names, op_session(name, tuple(sorted(attributes.items()))).run(None, inputs)))
        want = run_reference_op(name, inputs, attributes)
        parity.label = f"{name} case {case} {attributes}"
        for port in contract.outputs:
            atol = TOKENS_ATOL if port.dtype == "float32" else None
            parity.compare(port.name, got[port.name], want[port.name].numpy(), atol)
            assert str(got[port.name].dtype) == port.dtype
    assert_parity(parity)


def test_every_custom_op_is_complete():
    """Every op has a contract, a reference, an ONNX function, a parity case and is used by the outer graph."""
    names = set(O.OP_CONTRACTS)
    assert names == set(O.REFERENCE_OPS), "every op in plugins_trt.ops needs a reference implementation"
    assert names == set(H.FUNCTION_BUILDERS), "every op needs an ONNX local function builder"
    assert names == set(OP_CASES), "every op needs a parity case in OP_CASES"
    model = H.build_outer_merge_model(OUTER_CONFIGS["contextual"], (3, 4), "onevision", 8)
    used = {op for domain, op in H.onnx_op_types(model) if domain == O.DOMAIN}
    assert used == names


# --------------------------------------------------------------------------- structure


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("config_name", ["r10", "contextual"])
def test_outer_graph_structure(config_name, layout):
    model = H.build_outer_merge_model(OUTER_CONFIGS[config_name], (3, 4), layout, 8)
    onnx.checker.check_model(model, full_check=True)

    custom = [n for n in model.graph.node if n.domain != ""]
    assert custom and {n.domain for n in custom} == {O.DOMAIN}
    assert (O.DOMAIN, O.TEMPORAL_SEGMENT) in H.onnx_op_types(model)
    assert (O.DOMAIN, O.DENSITY_PEAK_MERGE) in H.onnx_op_types(model)
    assert {(o.domain, o.version) for o in model.opset_import} == {("", H.DEFAULT_OPSET), (O.DOMAIN, O.OP_VERSION)}
    for node in custom:
        contract = O.get_contract(node.op_type)
        attrs = {a.name: helper_value(a) for a in node.attribute}
        assert set(attrs) <= set(contract.attribute_names)
        assert attrs[O.PLUGIN_VERSION_ATTR] == str(O.OP_VERSION) and attrs[O.PLUGIN_NAMESPACE_ATTR] == O.PLUGIN_NAMESPACE
        assert len(node.input) == len(contract.inputs) and len(node.output) == len(contract.outputs)

    functions = {(f.domain, f.name): f for f in model.functions}
    assert set(functions) == {(O.DOMAIN, name) for name in O.OP_CONTRACTS}
    for (_, name), function in functions.items():
        contract = O.get_contract(name)
        assert list(function.input) == contract.input_names and list(function.output) == contract.output_names
        assert [a.name for a in function.attribute_proto] == contract.attribute_names
    for name, op_types in H.function_op_types(model).items():
        assert {domain for domain, _ in op_types} == {""}, f"function {name} uses non-standard ops: {op_types}"
    assert ("", "Loop") in H.function_op_types(model)[O.TEMPORAL_SEGMENT]


def test_config_is_baked_into_node_attributes():
    config = OUTER_CONFIGS["window3"]
    model = H.build_outer_merge_model(config, (3, 4), "onevision", 8)
    attrs = {n.op_type: {a.name: helper_value(a) for a in n.attribute} for n in model.graph.node if n.domain == O.DOMAIN}
    assert attrs[O.TEMPORAL_SEGMENT]["max_window"] == 3
    assert attrs[O.TEMPORAL_SEGMENT]["tau"] == pytest.approx(0.75)
    assert attrs[O.DENSITY_PEAK_MERGE]["k_nn"] == 3 and attrs[O.DENSITY_PEAK_MERGE]["beta"] == pytest.approx(0.3)
    unbounded = H.build_outer_merge_model(OUTER_CONFIGS["r10"], (3, 4), "onevision", 8)
    ts = next(n for n in unbounded.graph.node if n.op_type == O.TEMPORAL_SEGMENT)
    assert {a.name: helper_value(a) for a in ts.attribute}["max_window"] == 0


def test_graphs_have_no_dead_nodes():
    """Every node feeds something (only the unused extra outputs of multi-output ops may dangle)."""
    models = [
        H.build_outer_merge_model(OUTER_CONFIGS[c], (3, 4), layout, 8, metadata=m)
        for c in ("r10", "contextual")
        for layout in LAYOUTS
        for m in (False, True)
    ] + [H.build_inner_merge_model(mode, 0.5, 8) for mode in ("sequential", "mean")]
    for model in models:
        scopes = [(model.graph.name, model.graph.node, [o.name for o in model.graph.output])]
        scopes += [(f.name, f.node, list(f.output)) for f in model.functions]
        for scope, nodes, outputs in scopes:
            used = set(outputs) | {i for n in nodes for i in n.input} | _subgraph_reads(nodes)
            dead = [n.name for n in nodes if not any(o in used for o in n.output)]
            assert not dead, f"{scope}: nodes whose outputs nothing reads: {dead}"


def _subgraph_reads(nodes) -> set[str]:
    reads = set()
    for node in nodes:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                reads |= {i for n in attr.g.node for i in n.input} | _subgraph_reads(attr.g.node)
    return reads


def test_inner_graph_uses_standard_ops_only():
    for mode in ("sequential", "mean"):
        model = H.build_inner_merge_model(mode, 0.5, 8)
        onnx.checker.check_model(model, full_check=True)
        assert {domain for domain, _ in H.onnx_op_types(model)} == {""} and not model.functions


def test_graphs_match_the_runtime_stage_contracts():
    """With the newline baked in and no metadata, the files carry exactly the stage I/O of holitom.contracts."""
    dims = C.ModelDims(num_layers=4, inner_layer=2, hidden_size=8, num_kv_heads=1, head_dim=4, vocab_size=16, image_size=384, tokens_per_frame=12)
    specs = C.stage_specs(dims)
    outer = H.build_outer_merge_model(OUTER_CONFIGS["r25"], (3, 4), "llava_video", 8, image_newline=np.ones(8, np.float32))
    H.check_model_io(outer, specs[C.OUTER_MERGE])
    H.check_model_io(H.build_inner_merge_model("sequential", 0.5, 8), specs[C.INNER_MERGE])
    # and the baked newline is what the graph emits
    rng = np.random.default_rng(0)
    x, attention, _ = make_video(rng, 5, 12, 8)
    (tokens,) = ort.InferenceSession(outer.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"features": x, "attention": attention})
    want = outer_merge(torch.from_numpy(x), torch.from_numpy(attention), OUTER_CONFIGS["r25"], (3, 4), "llava_video", torch.ones(8))
    np.testing.assert_allclose(tokens, want.tokens.numpy(), rtol=0, atol=TOKENS_ATOL)


def test_io_check_reports_mismatches():
    model = H.build_outer_merge_model(OUTER_CONFIGS["r10"], (3, 4), "onevision", 8)
    spec = H.outer_merge_io((3, 4), 8)
    H.check_model_io(model, spec)
    model.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "rows"
    with pytest.raises(ExportError, match="merged_tokens"):
        H.check_model_io(model, spec)
    with pytest.raises(ExportError, match=r"missing outputs \['frame_index', 'position_index'\]"):
        H.check_model_io(model, H.outer_merge_io((3, 4), 8, metadata=True))


def test_dynamic_frames_in_one_session_and_saved_file(tmp_path):
    """The frame axis is named and dynamic; the saved file itself runs for several F in one session."""
    config = OUTER_CONFIGS["r10"]
    model = H.build_outer_merge_model(config, (4, 5), "onevision", 8, metadata=True)
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param == C.FRAMES
    assert model.graph.output[0].type.tensor_type.shape.dim[0].dim_param == C.TOKENS
    path = tmp_path / "outer_merge.onnx"
    onnx.save_model(model, path)
    onnx.checker.check_model(str(path), full_check=True)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(5)
    rows = []
    for frames in (3, 17, 1, 24):
        x, attention, newline = make_video(rng, frames, 20, 8)
        tokens, frame_index, _ = session.run(None, {"features": x, "attention": attention, "image_newline": newline})
        plan = plan_outer_merge(torch.from_numpy(x), torch.from_numpy(attention), config, (4, 5), "onevision")
        assert tokens.shape == (plan.num_rows, 8) and frame_index.max() == frames - 1
        rows.append(tokens.shape[0])
    assert len(set(rows)) == 4


def test_builder_errors_are_typed():
    config = OUTER_CONFIGS["r10"]
    with pytest.raises(ConfigError, match="layout"):
        H.build_outer_merge_model(config, (3, 4), "llava_next", 8)
    with pytest.raises(ConfigError, match="opset"):
        H.build_outer_merge_model(config, (3, 4), "onevision", 8, opset=16)
    with pytest.raises(ConfigError, match="hidden_size"):
        H.build_outer_merge_model(config, (3, 4), "onevision", 0)
    with pytest.raises(ConfigError, match="grid"):
        H.build_outer_merge_model(config, (3, 4, 5), "onevision", 8)
    with pytest.raises(ConfigError, match="MergeConfig"):
        H.build_outer_merge_model({"retain_ratio": 0.1}, (3, 4), "onevision", 8)
    with pytest.raises(ConfigError, match="image_newline"):
        H.build_outer_merge_model(config, (3, 4), "onevision", 8, image_newline=np.zeros(7, np.float32))
    with pytest.raises(ConfigError, match="mode"):
        H.build_inner_merge_model("median", 0.5, 8)
    with pytest.raises(ConfigError, match="ratio"):
        H.build_inner_merge_model("mean", 1.0, 8)
    with pytest.raises(ConfigError, match="attribute"):
        build_custom_op_model(O.TEMPORAL_SEGMENT, k_nn=3)


