"""Where a completion ends: shared by every backend that stops on text itself."""

from __future__ import annotations

from typing import Sequence


def first_match(text: str, stops: Sequence[str], end_markers: Sequence[str]) -> tuple[int, int, bool] | None:
    """(start, end, is_end_marker) of the match that completes first; ties go to end markers.

    Stop strings are kept in the completion (steps concatenate back into the solution);
    end markers (a base model starting the next ``Question:``) are cut like EOS.
    """
    best = None
    for is_end, group in ((True, end_markers), (False, stops)):
        for m in group:
            i = text.find(m)
            if i >= 0:
                key = (i + len(m), i, not is_end)
                if best is None or key < best[0]:
                    best = (key, (i, i + len(m), is_end))
    return None if best is None else best[1]


__all__ = ["first_match"]


def marker_window(markers: Sequence[str]) -> int:
    """Generated tokens to decode when looking for a stop string or end marker that may have
    just completed: a marker of b bytes spans at most b tokens, plus one on each side that may
    carry extra text; the slack covers tokens that decode to nothing."""
    return 2 * max((len(m.encode()) for m in markers), default=0) + 8
