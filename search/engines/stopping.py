"""Where a completion ends: shared by every backend that stops on text itself.

Two kinds of text end a completion. A caller's *stop strings* (the step delimiter of a
tree search) are kept at the end of the completion, so steps concatenate back into the
solution. A prompt format's *end markers* (a base model starting the next ``Question:``)
act like EOS and are cut. :class:`StopRule` turns both into what generation watches for
while decoding and into the final text and finish reason of a row, so the transformers and
llama.cpp policies resolve them the same way.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

from ..types import SamplingParams


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


def marker_window(markers: Sequence[str]) -> int:
    """Generated tokens to decode when looking for a stop string or end marker that may have
    just completed: a marker of b bytes spans at most b tokens, plus one on each side that may
    carry extra text; the slack covers tokens that decode to nothing."""
    return 2 * max((len(m.encode()) for m in markers), default=0) + 8


class TextEnd(NamedTuple):
    """A row's final text and finish reason (``stop``, ``eos`` or ``length``).

    ``unmatched`` is true when decoding saw a marker in a row's last tokens but the whole
    row's text has none (the window and the full decode disagreed, e.g. around invalid
    UTF-8); the text is then kept whole and the reason is ``stop``.
    """

    text: str
    reason: str
    unmatched: bool = False


class StopRule:
    """What one ``generate`` call stops on: the caller's stop strings and the format's end markers.

    ``markers`` and ``window`` are computed once, since decoders consult them every step.
    """

    __slots__ = ("stops", "end_markers", "markers", "window")

    def __init__(self, stops: Sequence[str], end_markers: Sequence[str]) -> None:
        self.stops = tuple(stops)
        self.end_markers = tuple(end_markers)
        #: every string whose appearance in the generated text ends a row
        self.markers = (*self.stops, *self.end_markers)
        #: trailing generated tokens to decode when looking for a marker (see marker_window)
        self.window = marker_window(self.markers)

    @classmethod
    def for_call(cls, params: SamplingParams, end_markers: Sequence[str]) -> "StopRule":
        """The rule for one call: ``params.stop`` and the prompt format's ``end_markers``."""
        return cls(params.stop, end_markers)

    def seen_in(self, tail: str) -> bool:
        """Whether the decoded tail of a row contains a marker, so the row ends here."""
        return any(m in tail for m in self.markers)

    def finish(self, text: str, end: str) -> TextEnd:
        """The completion of a row that ended by ``end`` (``eos``, ``text`` or ``length``):
        a row ended on text is cut after its first stop string (kept) or before its first
        end marker (dropped, reported as ``eos``)."""
        if end != "text":
            return TextEnd(text, "eos" if end == "eos" else "length")
        match = first_match(text, self.stops, self.end_markers)
        if match is None:
            return TextEnd(text, "stop", unmatched=True)
        start, stop_end, is_end_marker = match
        return TextEnd(text[:start], "eos") if is_end_marker else TextEnd(text[:stop_end], "stop")

    def __repr__(self) -> str:
        return f"StopRule(stops={self.stops!r}, end_markers={self.end_markers!r})"


__all__ = ["StopRule", "TextEnd", "first_match", "marker_window"]
