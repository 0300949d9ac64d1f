"""Quality-diversity fronts: non-dominated points and their 2-D hypervolume (both axes maximised)."""

from __future__ import annotations

from collections.abc import Sequence


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the non-dominated points, sorted by the first coordinate (both maximised).

    A point is dominated when another is >= on both axes and > on one. Of exact duplicates, the first
    index is kept.
    """
    order = sorted(range(len(points)), key=lambda i: (-points[i][0], -points[i][1], i))
    front, best_second = [], float("-inf")
    for i in order:  # sweep by decreasing first coordinate; keep the points that raise the second
        if points[i][1] > best_second:
            front.append(i)
            best_second = points[i][1]
    return sorted(front, key=lambda i: points[i][0])


def hypervolume_2d(points: Sequence[tuple[float, float]], reference: tuple[float, float]) -> float:
    """Area dominated by ``points`` and bounded below by ``reference`` (both axes maximised).

    Points not strictly better than the reference on both axes contribute nothing. The front, sorted
    by increasing x (hence decreasing y), is a staircase: slab k spans from the previous front point's
    x (or the reference's) to its own x, at its own height above the reference.
    """
    inside = [p for p in points if p[0] > reference[0] and p[1] > reference[1]]
    area, left = 0.0, reference[0]
    for i in pareto_front(inside):
        x, y = inside[i]
        area += (x - left) * (y - reference[1])
        left = x
    return area
