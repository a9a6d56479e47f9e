"""Literal, loop-based transcription of DESIGN.md section 2 -- the test oracle.

Written from the spec one token / pair / frame at a time in plain Python over
float64 numpy vectors. It shares no code with ``holitom.merge`` and makes no
attempt at speed. Tie rules are the ones the library documents:

- DP: a frame closes a single-frame window unless a longer one is strictly
  better; among equal longer windows the shortest wins;
- attention top-k: larger attention first, lower position first among ties;
- DPC: j is denser than i if rho_j > rho_i, or rho_j == rho_i and j < i; top-M by
  gamma with the lower index first among ties; a token joins the nearest centre,
  the lower centre index among ties;
- inner merge: keep the top round(L_v * (1 - R)) (at least 1) scores, lower index
  first among ties; a dropped token joins the most cosine-similar kept token,
  the lower index among ties.

Besides its answer, every function reports the *margin* of the discrete
decisions it took on computed floats (how far a similarity was from tau, two
densities from each other, ...). The library computes in float32, the oracle in
float64; a random case whose margin is below float32 resolution could
legitimately go either way, so the random tests redraw such cases instead of
loosening the comparison. Exact ties (e.g. duplicated tokens) are not near-ties:
both sides see them exactly and apply the tie rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

EPS = 1e-8


def cosine(u: np.ndarray, v: np.ndarray) -> float:
    nu = max(math.sqrt(sum(float(a) * float(a) for a in u)), EPS)
    nv = max(math.sqrt(sum(float(b) * float(b) for b in v)), EPS)
    dot = sum(float(a) * float(b) for a, b in zip(u, v))
    return min(max(dot / (nu * nv), -1.0), 1.0)


# --------------------------------------------------------------------------- stage I


def similarity(x: np.ndarray) -> list[list[float]]:
    """s[t][p] = cos(X[t, p], X[t+1, p])."""
    num_frames, num_pos, _ = x.shape
    return [[cosine(x[t, p], x[t + 1, p]) for p in range(num_pos)] for t in range(num_frames - 1)]


def is_static(s, p: int, a: int, e: int, tau: float) -> bool:
    """Position p is static in [a, e] if s[t][p] > tau for every t in a..e-1."""
    for t in range(a, e):
        if not s[t][p] > tau:
            return False
    return True


def count_table(s, num_frames: int, num_pos: int, tau: float, max_window=None) -> list[list[int]]:
    table = [[0] * num_frames for _ in range(num_frames)]
    for a in range(num_frames):
        for e in range(a + 1, num_frames):
            if max_window is not None and e - a + 1 > max_window:
                continue
            n = 0
            for p in range(num_pos):
                if is_static(s, p, a, e, tau):
                    n += 1
            table[a][e] = (e - a) * n
    return table


def segment(table, num_frames: int, max_window=None) -> tuple[list[tuple[int, int]], int]:
    limit = num_frames if max_window is None else max_window
    dp = {-1: 0}
    back = {}
    for i in range(num_frames):
        best, best_w = dp[i - 1], 1
        for w in range(2, min(i + 1, limit) + 1):
            value = dp[i - w] + table[i - w + 1][i]
            if value > best:
                best, best_w = value, w
        dp[i] = best
        back[i] = best_w
    windows = []
    i = num_frames - 1
    while i >= 0:
        windows.append((i - back[i] + 1, i))
        i -= back[i]
    return windows[::-1], dp[num_frames - 1]


# --------------------------------------------------------------------------- DPC


@dataclass
class Clustering:
    centres: list[int]  # ascending token indices
    assign: list[int]  # centre token index of each token
    merged: dict[int, np.ndarray]  # centre token index -> merged vector
    rho: list[float]
    delta: list[float]
    gamma: list[float]
    margin: float = math.inf


def dpc(tokens: list[np.ndarray], num_clusters: int, k_nn: int, beta: float) -> Clustering:
    n = len(tokens)
    if num_clusters == 0:
        return Clustering([], [-1] * n, {}, [], [], [])
    dim = len(tokens[0])
    d = [[math.sqrt(sum((float(a) - float(b)) ** 2 for a, b in zip(tokens[i], tokens[j]))) / math.sqrt(dim) for j in range(n)] for i in range(n)]
    k = min(k_nn, num_clusters)
    rho = []
    for i in range(n):
        nearest = sorted(d[i][j] ** 2 for j in range(n))[:k]  # i itself is among them (distance 0)
        rho.append(math.exp(-sum(nearest) / k))

    def denser(j: int, i: int) -> bool:
        return rho[j] > rho[i] or (rho[j] == rho[i] and j < i)

    d_max = max(d[i][j] for i in range(n) for j in range(n))
    delta, parent = [], []
    for i in range(n):
        best, best_j = math.inf, None
        for j in range(n):
            if denser(j, i) and d[i][j] < best:
                best, best_j = d[i][j], j
        if best_j is None:
            best = d_max
        delta.append(best)
        parent.append(best_j)
    gamma = [rho[i] * delta[i] for i in range(n)]
    ranked = sorted(range(n), key=lambda i: (-gamma[i], i))
    centres = sorted(ranked[:num_clusters])
    assign = []
    for i in range(n):
        if i in centres:
            assign.append(i)
            continue
        assign.append(min(centres, key=lambda c: (d[i][c], c)))
    merged = {}
    for c in centres:
        members = [i for i in range(n) if assign[i] == c and i != c]
        if members:
            mean = sum(tokens[i] for i in members) / len(members)
            merged[c] = beta * tokens[c] + (1 - beta) * mean
        else:
            merged[c] = tokens[c].copy()

    # Margins of the decisions taken on computed floats (relative to the largest value).
    margin = math.inf
    rho_scale = max(rho)
    for i in range(n):
        for j in range(n):
            if i == j or rho[i] == rho[j] or not rho[j] > rho[i]:
                continue
            # j is denser than i; flipping them matters if j is i's parent or i would become j's.
            if parent[i] == j or d[i][j] <= delta[j]:
                margin = min(margin, (rho[j] - rho[i]) / rho_scale)
    if num_clusters < n:
        g_scale = max(gamma) if max(gamma) > 0 else 1.0
        g_in, g_out = gamma[ranked[num_clusters - 1]], gamma[ranked[num_clusters]]
        if g_in != g_out:
            margin = min(margin, (g_in - g_out) / g_scale)
    d_scale = d_max if d_max > 0 else 1.0
    if len(centres) > 1:
        for i in range(n):
            if i in centres:
                continue
            dist = sorted(d[i][c] for c in centres)
            if dist[0] != dist[1]:
                margin = min(margin, (dist[1] - dist[0]) / d_scale)
    return Clustering(centres, assign, merged, rho, delta, gamma, margin)


# --------------------------------------------------------------------------- stages I + II


@dataclass
class OuterResult:
    windows: list[tuple[int, int]]
    removed: int
    retain_ratio: float
    rows: list[tuple[int, int]]  # (frame, position) per output row; position -1 = newline
    tokens: list[np.ndarray | None]  # merged vector per row, None for newline rows
    margin: float = math.inf
    static: list[list[bool]] = field(default_factory=list)


def outer_merge(
    x: np.ndarray,
    attention: np.ndarray,
    *,
    retain_ratio,
    tau: float,
    beta: float,
    contextual_frac: float,
    k_nn: int,
    max_window,
    grid: tuple[int, int],
    layout: str,
) -> OuterResult:
    """The whole outer merge of one video, literally. ``x`` (F, P, D) float64, ``attention`` (F, P)."""
    num_frames, num_pos, _ = x.shape
    rows_n, cols_n = grid
    if retain_ratio is None:  # vanilla: every token in order, the layout's newlines
        placed = {t: [(p, x[t, p].copy()) for p in range(num_pos)] for t in range(num_frames)}
        windows = [(t, t) for t in range(num_frames)]
        return _emit(windows, {}, placed, layout, grid, num_frames, 0, 1.0, math.inf, [])

    s = similarity(x)
    margin = math.inf
    for row in s:
        for value in row:
            margin = min(margin, abs(value - tau))
    table = count_table(s, num_frames, num_pos, tau, max_window)
    windows, removed = segment(table, num_frames, max_window)
    total = num_frames * num_pos
    # DESIGN.md step 5, the official expression in this order (r * N / (N - R) differs in the last bit).
    rp = min(retain_ratio / ((total - removed) / total), 1.0)

    static_tokens = {}  # window start -> [(position, vector)]
    dynamic_tokens = {}  # frame -> [(position, vector)]
    static_mask = [[False] * num_pos for _ in range(num_frames)]
    for a, e in windows:
        if e > a:
            static_pos = [p for p in range(num_pos) if is_static(s, p, a, e, tau)]
        else:
            static_pos = []
        for t in range(a, e + 1):
            for p in static_pos:
                static_mask[t][p] = True
        n_static = len(static_pos)
        n_dynamic = num_pos - n_static
        budget = math.ceil(n_dynamic * rp)
        dominant = round(budget * (1 - contextual_frac))
        contextual = budget - dominant
        for t in range(a, e + 1):
            dyn = [p for p in range(num_pos) if p not in static_pos]
            ranked = sorted(dyn, key=lambda p: (-float(attention[t, p]), p))
            chosen = ranked[:dominant]
            out = [(p, x[t, p].copy()) for p in chosen]
            if contextual > 0:
                rest = sorted(p for p in dyn if p not in chosen)
                cl = dpc([x[t, p] for p in rest], contextual, k_nn, beta)
                margin = min(margin, cl.margin)
                out += [(rest[c], cl.merged[c]) for c in cl.centres]
            dynamic_tokens[t] = out
        if e > a:
            clusters = round(n_static * rp)
            means = [sum(x[t, p] for t in range(a, e + 1)) / (e - a + 1) for p in static_pos]
            cl = dpc(means, clusters, k_nn, beta)
            margin = min(margin, cl.margin)
            static_tokens[a] = [(static_pos[c], cl.merged[c]) for c in cl.centres]
    return _emit(windows, static_tokens, dynamic_tokens, layout, grid, num_frames, removed, rp, margin, static_mask)


def _emit(windows, static_tokens, dynamic_tokens, layout, grid, num_frames, removed, rp, margin, static_mask) -> OuterResult:
    rows_n, cols_n = grid
    rows: list[tuple[int, int]] = []
    tokens: list = []
    for a, e in windows:
        if layout == "onevision":
            for p, v in sorted(static_tokens.get(a, []), key=lambda pv: pv[0]):
                rows.append((a, p))
                tokens.append(v)
            for t in range(a, e + 1):
                for p, v in sorted(dynamic_tokens.get(t, []), key=lambda pv: pv[0]):
                    rows.append((t, p))
                    tokens.append(v)
        elif layout == "llava_video":
            for t in range(a, e + 1):
                here = list(dynamic_tokens.get(t, []))
                if t == a:
                    here += static_tokens.get(a, [])
                here.sort(key=lambda pv: pv[0])
                for r in range(rows_n):
                    in_row = [(p, v) for p, v in here if p // cols_n == r]
                    for p, v in in_row:
                        rows.append((t, p))
                        tokens.append(v)
                    if in_row:
                        rows.append((t, -1))
                        tokens.append(None)
        else:
            raise ValueError(layout)
    if layout == "onevision":
        rows.append((num_frames - 1, -1))
        tokens.append(None)
    return OuterResult(windows, removed, rp, rows, tokens, margin, static_mask)


# --------------------------------------------------------------------------- stage III


@dataclass
class InnerResult:
    keep: list[int]
    dropped: list[int]
    assign: list[int]  # kept token index (into the visual span) of each dropped token
    hidden: np.ndarray  # (S', D)
    kept_index: list[int]
    margin: float = math.inf


def inner_merge(hidden: np.ndarray, span: tuple[int, int], scores: np.ndarray, ratio: float, mode: str) -> InnerResult:
    start, end = span
    num_visual = end - start
    k = max(round(num_visual * (1 - ratio)), 1) if num_visual else 0
    ranked = sorted(range(num_visual), key=lambda i: (-float(scores[i]), i))
    keep = sorted(ranked[:k])
    dropped = sorted(ranked[k:])
    visual = [hidden[start + i].astype(np.float64).copy() for i in range(num_visual)]
    assign = []
    margin = math.inf
    for i in dropped:
        sims = [(cosine(visual[i], visual[j]), j) for j in keep]
        best = max(sims, key=lambda sj: (sj[0], -sj[1]))
        assign.append(best[1])
        ordered = sorted((s for s, _ in sims), reverse=True)
        if len(ordered) > 1 and ordered[0] != ordered[1]:
            margin = min(margin, ordered[0] - ordered[1])
    merged = {j: visual[j].copy() for j in keep}
    if mode == "sequential":
        for i, j in zip(dropped, assign):  # ascending dropped index, the official loop
            merged[j] = (merged[j] + visual[i]) / 2
    elif mode == "mean":
        for j in keep:
            members = [visual[j]] + [visual[i] for i, jj in zip(dropped, assign) if jj == j]
            merged[j] = sum(members) / len(members)
    else:
        raise ValueError(mode)
    out = [hidden[t].astype(np.float64) for t in range(start)]
    out += [merged[j] for j in keep]
    out += [hidden[t].astype(np.float64) for t in range(end, hidden.shape[0])]
    kept_index = list(range(start)) + [start + j for j in keep] + list(range(end, hidden.shape[0]))
    dim = hidden.shape[1]
    return InnerResult(keep, dropped, assign, np.array(out).reshape(-1, dim), kept_index, margin)


def last_token_attention(q_last: np.ndarray, keys: np.ndarray, span: tuple[int, int]) -> list[float]:
    """Per head h (KV head h // (H / Hkv)): softmax over all S keys of q.k / sqrt(hd); mean over heads on the span."""
    num_heads, head_dim = q_last.shape
    num_kv, seq, _ = keys.shape
    group = num_heads // num_kv
    start, end = span
    total = [0.0] * (end - start)
    for h in range(num_heads):
        kv = h // group
        logits = [sum(float(q_last[h, c]) * float(keys[kv, s, c]) for c in range(head_dim)) / math.sqrt(head_dim) for s in range(seq)]
        top = max(logits)
        exps = [math.exp(v - top) for v in logits]
        z = sum(exps)
        for i, s in enumerate(range(start, end)):
            total[i] += exps[s] / z
    return [v / num_heads for v in total]
