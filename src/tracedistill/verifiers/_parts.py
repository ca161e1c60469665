"""Function tests as groups with per-test time limits, cut into parts for several runners.

Parent side only (the sandboxed child never imports this): which tests a sample's runs hold,
with what limits, and which part of a split sample each test's result comes from.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from tracedistill.verifiers._protocol import Group

__all__ = ["function_groups", "plan_parts", "split_groups", "test_owners"]


def function_groups(
    *tests: tuple[list[Any], Sequence[float | None]],
    min_limit_s: float,
    factor: float,
    default_s: float,
) -> tuple[list[Group], list[list[float] | None]]:
    """The groups to run (one per non-empty ``(inputs, reference times)``, numbered by
    position: 0 base, 1 plus) with each test's time limit, and the reference's times.

    A test may take ``max(min_limit_s, factor * reference time)``, or ``default_s`` when its
    reference time is unknown (evalplus: 1 s, 4x). Costs are None unless every time is known.
    """
    groups: list[Group] = []
    costs: list[list[float] | None] = []
    for group_index, (inputs, times) in enumerate(tests):
        if not inputs:
            continue
        limits = (
            [max(min_limit_s, factor * t) if t is not None else default_s for t in times]
            if times
            else [default_s] * len(inputs)
        )
        groups.append({"id": group_index, "start": 0, "inputs": inputs, "limits": limits})
        costs.append([t for t in times if t is not None] if times and None not in times else None)
    return groups, costs


def plan_parts(
    groups: list[Group],
    costs: list[list[float] | None],
    *,
    split_above_s: float | None,
    workers: int,
) -> list[list[Group]]:
    """Cut the test groups into consecutive parts of about equal reference time.

    Splits only when every test's reference time is known, their sum is over
    ``split_above_s`` and there is more than one runner; at most two parts per runner, and
    none much shorter than a second (each part pays for a process and loading the code).
    """
    known = [c for c in costs if c is not None]
    total = sum(sum(c) for c in known)
    if split_above_s is None or workers < 2 or len(known) != len(groups) or total <= split_above_s:
        return [groups]
    return split_groups(groups, known, min(2 * workers, max(2, math.ceil(total))))


def test_owners(parts: list[list[Group]]) -> dict[tuple[int, int], int]:
    """Which part runs each test: ``(group id, index in the group) -> part index``."""
    return {
        (group["id"], group["start"] + offset): part_index
        for part_index, part in enumerate(parts)
        for group in part
        for offset in range(len(group["inputs"]))
    }


def split_groups(groups: list[Group], times: list[list[float]], count: int) -> list[list[Group]]:
    """Cut test groups into at most ``count`` consecutive parts of about equal reference time.

    ``times`` holds each test's reference time, per group. Each slice keeps its group's id and
    the index of its first test there, so that results map back to the whole.
    """
    total = sum(sum(t) for t in times)
    share = total / count
    parts: list[list[Group]] = []
    current: list[Group] = []
    spent = 0.0  # reference time of the parts already closed and the current one

    def cut(group: Group, begin: int, end: int) -> Group:
        return {
            "id": group["id"],
            "start": group["start"] + begin,
            "inputs": group["inputs"][begin:end],
            "limits": group["limits"][begin:end],
        }

    for group, group_times in zip(groups, times, strict=True):
        begin = 0
        for index, t in enumerate(group_times):
            spent += t
            if spent >= share * (len(parts) + 1) and len(parts) < count - 1:
                current.append(cut(group, begin, index + 1))
                parts.append(current)
                current, begin = [], index + 1
        if begin < len(group_times):
            current.append(cut(group, begin, len(group_times)))
    if current:
        parts.append(current)
    return parts
