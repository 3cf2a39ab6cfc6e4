"""Ranked-list pictures: a query image followed by its top-k gallery images after junk removal.

Each picture is one row of cells: the query (blue frame), then rank 1..k with a green frame for a
true match (same pid) and a red frame otherwise, captioned with rank, pid, camera and distance; with an
``activation`` function (image file → map in [0, 1], from ``reidkit.engine.activation``) a second row shows
each image with its activation map laid over it. The lists come from the evaluation
(:mod:`reidkit.metrics.ranked_lists`: junk rule of the Market-1501 protocol).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from reidkit.data.images import read_rgb
from reidkit.metrics.ranked_lists import RankedLists
from reidkit.outputs import write_image
from reidkit.viz.activation import overlay_activation

CELL_SIZE = (128, 256)  # (width, height) of each image: 64×128 person crops scaled ×2
FRAME = 5  # frame width in pixels around each image
QUERY_COLOR, MATCH_COLOR, NON_MATCH_COLOR = (40, 90, 220), (0, 170, 0), (220, 0, 0)
_GAP, _QUERY_GAP, _MARGIN, _CAPTION_HEIGHT = 8, 24, 8, 56

Sample = tuple[str, int, int]  # (path, pid, camid), camid 0-based
RANKED_FORMATS = {"png": (".png", "PNG", {}), "jpeg": (".jpg", "JPEG", {"quality": 85})}  # suffix, PIL format, options


def save_ranked_lists(
    ranked: RankedLists,
    query: list[Sample],
    gallery: list[Sample],
    out_dir: str | Path,
    query_indices: Sequence[int] | None = None,
    num_queries: int = 10,
    topk: int = 10,
    activation: Callable[[str], np.ndarray] | None = None,
    image_format: str = "png",
) -> list[Path]:
    """Write one ranked-list picture per chosen query, named ``query_{index:05d}.png`` (or ``.jpg``).

    Args:
        ranked: the evaluation's ranked lists (``reidkit.metrics.ranked_lists``: each query's nearest gallery
            items after junk removal, ties by gallery index, and its AP); from a distance matrix with
            ``rank_distances``.
        query: ``Q`` samples ``(path, pid, camid)``.
        gallery: ``G`` samples ``(path, pid, camid)``.
        out_dir: folder for the pictures (created if missing).
        query_indices: queries to draw; None draws ``num_queries`` valid queries (with a true match
            left after junk removal) spread evenly over the query set, deterministically.
        num_queries: how many queries to draw when ``query_indices`` is None.
        topk: gallery images per picture (at most the lists' length).
        activation: image file → activation map ``[h, w]`` in [0, 1]; when given, a second row shows the
            maps over the images.
        image_format: ``"png"`` (lossless, the run folder's pictures) or ``"jpeg"`` (quality 85: the
            report's, ~8× smaller and ~10× faster to encode for these photos).

    Returns:
        Paths of the pictures written, in the order of the chosen queries.

    Raises:
        ValueError: lists that do not match the samples, ``topk`` longer than the lists, a query index
            out of range, or another ``image_format``.
    """
    if image_format not in RANKED_FORMATS:
        raise ValueError(f"image_format must be one of {', '.join(RANKED_FORMATS)}, got {image_format!r}")
    if ranked.top_indices.shape[0] != len(query) or ranked.top_indices.max(initial=-1) >= len(gallery):
        raise ValueError(f"the ranked lists are for {ranked.top_indices.shape[0]} queries and another gallery, "
                         f"not for these {len(query)} queries and {len(gallery)} gallery items")
    if topk > ranked.top_indices.shape[1]:
        raise ValueError(f"topk={topk} but the ranked lists hold {ranked.top_indices.shape[1]} items per query")
    if query_indices is None:
        valid = np.flatnonzero(~np.isnan(ranked.ap)).tolist()
        count = min(num_queries, len(valid))
        query_indices = [valid[i * len(valid) // count] for i in range(count)]
    for index in query_indices:
        if not 0 <= index < len(query):
            raise ValueError(f"query index {index} out of range [0, {len(query)})")

    out_dir = Path(out_dir)
    suffix, pil_format, options = RANKED_FORMATS[image_format]
    font = ImageFont.load_default(size=14)
    paths = []
    for index in query_indices:
        _, q_pid, _ = query[index]
        ranked_items = [(gallery[j], float(d)) for j, d in zip(ranked.top_indices[index, :topk],
                                                              ranked.top_distances[index, :topk]) if j >= 0]
        picture = _compose(query[index], ranked_items, q_pid, topk, font, activation)
        paths.append(write_image(out_dir / f"query_{index:05d}{suffix}", picture, pil_format, **options))
    return paths


def _cell_origin(column: int) -> tuple[int, int]:
    """Top-left pixel ``(x, y)`` of the frame of a column (0 = query, r = rank r)."""
    width = CELL_SIZE[0] + 2 * FRAME
    return _MARGIN + column * (width + _GAP) + (_QUERY_GAP if column else 0), _MARGIN


def _compose(query: Sample, ranked: list[tuple[Sample, float]], q_pid: int, topk: int,
             font: ImageFont.FreeTypeFont, activation: Callable[[str], np.ndarray] | None = None) -> Image.Image:
    """One row picture: the query cell, then one cell per ranked gallery sample (two rows with `activation`)."""
    rows = 2 if activation is not None else 1
    width = _cell_origin(topk)[0] + CELL_SIZE[0] + 2 * FRAME + _MARGIN
    height = 2 * _MARGIN + rows * (CELL_SIZE[1] + 2 * FRAME) + (rows - 1) * _GAP + _CAPTION_HEIGHT
    picture = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(picture)
    path, pid, camid = query
    _draw_cell(picture, draw, 0, path, QUERY_COLOR, ["query", f"pid {pid}", f"c{camid + 1}"], font, activation)
    for rank, ((path, pid, camid), distance) in enumerate(ranked, start=1):
        color = MATCH_COLOR if pid == q_pid else NON_MATCH_COLOR
        caption = [f"rank {rank}", f"pid {pid} c{camid + 1}", f"d {distance:.4g}"]
        _draw_cell(picture, draw, rank, path, color, caption, font, activation)
    return picture


def sample_picture(path: str | tuple[str, ...], size: tuple[int, int]) -> Image.Image:
    """The picture of a sample at `size` (width, height): its image, or for a tracklet (a tuple of frame
    paths) four of its frames evenly spaced in time, in a 2×2 grid read left to right, top to bottom."""
    if not isinstance(path, tuple):
        return read_rgb(path).resize(size)
    grid = Image.new("RGB", size)
    half = (size[0] // 2, size[1] // 2)
    for slot in range(4):
        frame = path[slot * (len(path) - 1) // 3] if len(path) > 1 else path[0]
        grid.paste(read_rgb(frame).resize(half), ((slot % 2) * half[0], (slot // 2) * half[1]))
    return grid


def _draw_cell(picture: Image.Image, draw: ImageDraw.ImageDraw, column: int, path: str, color: tuple,
               lines: list[str], font: ImageFont.FreeTypeFont,
               activation: Callable[[str], np.ndarray] | None = None) -> None:
    """Frame of ``color``, the resized image inside it (and below it, the image under its activation map),
    and caption lines below."""
    x, y = _cell_origin(column)
    image = sample_picture(path, CELL_SIZE)
    tracklet = isinstance(path, tuple)  # activation maps are drawn for single images only
    tiles = [image] + ([overlay_activation(image, activation(path))] if activation is not None and not tracklet else [])
    for row, tile in enumerate(tiles):
        top = y + row * (CELL_SIZE[1] + 2 * FRAME + _GAP)
        draw.rectangle([x, top, x + CELL_SIZE[0] + 2 * FRAME - 1, top + CELL_SIZE[1] + 2 * FRAME - 1], fill=color)
        picture.paste(tile, (x + FRAME, top + FRAME))
    caption_top = y + len(tiles) * (CELL_SIZE[1] + 2 * FRAME) + (len(tiles) - 1) * _GAP + 3
    for line_index, line in enumerate(lines):
        draw.text((x, caption_top + 17 * line_index), line, fill="black", font=font)
