"""Ranked-list pictures: a query image followed by its top-k gallery images after junk removal.

Each picture is one row of cells: the query (blue frame), then rank 1..k with a green frame for a
true match (same pid) and a red frame otherwise, captioned with rank, pid, camera and distance. The
junk rule is the one of :func:`reidkit.metrics.evaluate_rank` (Market-1501 protocol).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from reidkit.data.images import read_rgb
from reidkit.metrics.rank import JUNK_RULES

CELL_SIZE = (128, 256)  # (width, height) of each image: 64×128 person crops scaled ×2
FRAME = 5  # frame width in pixels around each image
QUERY_COLOR, MATCH_COLOR, NON_MATCH_COLOR = (40, 90, 220), (0, 170, 0), (220, 0, 0)
_GAP, _QUERY_GAP, _MARGIN, _CAPTION_HEIGHT = 8, 24, 8, 56

Sample = tuple[str, int, int]  # (path, pid, camid), camid 0-based


def save_ranked_lists(
    distmat: Any,
    query: list[Sample],
    gallery: list[Sample],
    out_dir: str | Path,
    query_indices: Sequence[int] | None = None,
    num_queries: int = 10,
    topk: int = 10,
    junk: str = "market",
) -> list[Path]:
    """Write one ranked-list PNG per chosen query, named ``query_{index:05d}.png``.

    Args:
        distmat: ``[Q, G]`` distances (numpy or torch); ties are ordered by gallery index.
        query: ``Q`` samples ``(path, pid, camid)``.
        gallery: ``G`` samples ``(path, pid, camid)``.
        out_dir: folder for the pictures (created if missing).
        query_indices: queries to draw; None draws ``num_queries`` valid queries (with a true match
            left after junk removal) spread evenly over the query set, deterministically.
        num_queries: how many queries to draw when ``query_indices`` is None.
        topk: gallery images per picture.
        junk: ``"market"`` (drop gallery items with the query's pid and camera, and pid -1) or
            ``"none"``.

    Returns:
        Paths of the pictures written, in the order of the chosen queries.

    Raises:
        ValueError: unknown ``junk``, sizes that do not match ``distmat``, or a query index out of
            range.
    """
    if junk not in JUNK_RULES:
        raise ValueError(f"junk must be one of {JUNK_RULES}, got {junk!r}")
    if tuple(distmat.shape) != (len(query), len(gallery)):
        raise ValueError(f"distmat has shape {tuple(distmat.shape)}, expected ({len(query)}, {len(gallery)})")
    g_pids = np.array([pid for _, pid, _ in gallery], dtype=np.int64)
    g_camids = np.array([camid for _, _, camid in gallery], dtype=np.int64)
    if query_indices is None:
        valid = _valid_queries(query, g_pids, g_camids, junk)
        count = min(num_queries, len(valid))
        query_indices = [valid[i * len(valid) // count] for i in range(count)]
    for index in query_indices:
        if not 0 <= index < len(query):
            raise ValueError(f"query index {index} out of range [0, {len(query)})")

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    font = ImageFont.load_default(size=14)
    paths = []
    for index in query_indices:
        distances = _row(distmat, index)
        _, q_pid, q_camid = query[index]
        removed = np.zeros(len(gallery), bool)
        if junk == "market":
            removed = (g_pids == q_pid) & (g_camids == q_camid) | (g_pids == -1)
        order = np.argsort(distances, kind="stable")
        ranked = [(gallery[j], float(distances[j])) for j in order[~removed[order]][:topk]]
        picture = _compose(query[index], ranked, q_pid, topk, font)
        path = out_dir / f"query_{index:05d}.png"
        picture.save(path)
        paths.append(path)
    return paths


def _cell_origin(column: int) -> tuple[int, int]:
    """Top-left pixel ``(x, y)`` of the frame of a column (0 = query, r = rank r)."""
    width = CELL_SIZE[0] + 2 * FRAME
    return _MARGIN + column * (width + _GAP) + (_QUERY_GAP if column else 0), _MARGIN


def _compose(query: Sample, ranked: list[tuple[Sample, float]], q_pid: int, topk: int,
             font: ImageFont.FreeTypeFont) -> Image.Image:
    """One row picture: the query cell, then one cell per ranked gallery sample."""
    width = _cell_origin(topk)[0] + CELL_SIZE[0] + 2 * FRAME + _MARGIN
    height = 2 * _MARGIN + CELL_SIZE[1] + 2 * FRAME + _CAPTION_HEIGHT
    picture = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(picture)
    path, pid, camid = query
    _draw_cell(picture, draw, 0, path, QUERY_COLOR, ["query", f"pid {pid}", f"c{camid + 1}"], font)
    for rank, ((path, pid, camid), distance) in enumerate(ranked, start=1):
        color = MATCH_COLOR if pid == q_pid else NON_MATCH_COLOR
        caption = [f"rank {rank}", f"pid {pid} c{camid + 1}", f"d {distance:.4g}"]
        _draw_cell(picture, draw, rank, path, color, caption, font)
    return picture


def _draw_cell(picture: Image.Image, draw: ImageDraw.ImageDraw, column: int, path: str, color: tuple,
               lines: list[str], font: ImageFont.FreeTypeFont) -> None:
    """Frame of ``color``, the resized image inside it, and caption lines below."""
    x, y = _cell_origin(column)
    draw.rectangle([x, y, x + CELL_SIZE[0] + 2 * FRAME - 1, y + CELL_SIZE[1] + 2 * FRAME - 1], fill=color)
    picture.paste(read_rgb(path).resize(CELL_SIZE), (x + FRAME, y + FRAME))
    caption_top = y + CELL_SIZE[1] + 2 * FRAME + 3
    for line_index, line in enumerate(lines):
        draw.text((x, caption_top + 17 * line_index), line, fill="black", font=font)


def _valid_queries(query: list[Sample], g_pids: np.ndarray, g_camids: np.ndarray, junk: str) -> list[int]:
    """Indices of the queries with a true match left after junk removal."""
    cameras: dict[int, set[int]] = {}
    for pid, camid in zip(g_pids.tolist(), g_camids.tolist()):
        cameras.setdefault(pid, set()).add(camid)
    if junk == "none":
        return [i for i, (_, pid, _) in enumerate(query) if pid in cameras]
    return [i for i, (_, pid, camid) in enumerate(query) if pid != -1 and cameras.get(pid, set()) - {camid}]


def _row(distmat: Any, index: int) -> np.ndarray:
    """Row ``index`` of a numpy or torch distance matrix as a float64 numpy array."""
    row = distmat[index]
    if hasattr(row, "detach"):
        row = row.detach().cpu().double().numpy()
    return np.asarray(row, dtype=np.float64)
