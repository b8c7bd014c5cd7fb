"""The one record every stage passes around: a problem with its gold answer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Problem:
    """A question with a gold answer.

    ``id`` is stable across runs (the outcome store keys rows on it), ``source`` says
    where the problem came from (a file path, ``builtin:arith``, ``hf:NAME``) and
    ``metadata`` carries what the source knows about it: ``level``, ``subject``...
    """

    id: str
    question: str
    answer: str
    source: str = ""
    metadata: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @property
    def level(self) -> Any:
        return self.metadata.get("level")
