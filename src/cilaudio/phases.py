"""The class split: which classes each incremental phase learns."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Sequence


@dataclass(frozen=True)
class ClassSplit:
    """Ordered classes cut into consecutive phases (30 + 4 x 5 by default).

    ``groups[k]`` holds the classes that phase ``k`` learns; the model's outputs are ordered
    as the concatenation of the groups, so phase ``k``'s classes are the last outputs after
    phase ``k``.
    """

    groups: tuple[tuple[str, ...], ...]

    @classmethod
    def from_sizes(cls, classes: Sequence[str], sizes: Sequence[int]) -> "ClassSplit":
        classes = list(classes)
        if sum(sizes) != len(classes):
            raise ValueError(
                f"phase sizes {list(sizes)} add up to {sum(sizes)} classes but the class list "
                f"has {len(classes)}: make `phases` in the config sum to the number of classes"
            )
        if any(s <= 0 for s in sizes):
            raise ValueError(f"every phase needs at least one class; got sizes {list(sizes)}")
        duplicates = sorted({c for c in classes if classes.count(c) > 1})
        if duplicates:
            raise ValueError(f"class list names these classes more than once: {duplicates}")
        groups, start = [], 0
        for size in sizes:
            groups.append(tuple(classes[start : start + size]))
            start += size
        return cls(tuple(groups))

    @property
    def n_phases(self) -> int:
        return len(self.groups)

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(c for g in self.groups for c in g)

    def seen(self, phase: int) -> tuple[str, ...]:
        """Classes seen after ``phase`` (phases 0..phase), in output order."""
        self._check(phase)
        return tuple(c for g in self.groups[: phase + 1] for c in g)

    def columns(self, phase: int) -> slice:
        """The output columns of ``phase``'s classes (after phase ``phase`` or later)."""
        self._check(phase)
        start = sum(len(g) for g in self.groups[:phase])
        return slice(start, start + len(self.groups[phase]))

    def phase_of(self, name: str) -> int:
        for k, group in enumerate(self.groups):
            if name in group:
                return k
        raise KeyError(name)

    def _check(self, phase: int) -> None:
        if not 0 <= phase < self.n_phases:
            raise ValueError(f"phase {phase} is outside 0..{self.n_phases - 1}")


def match_classes(requested: Sequence[str], vocabulary: Sequence[str], *, source: str) -> list[str]:
    """Check that every requested class name is in the dataset's vocabulary.

    An unknown name stops the run with the closest vocabulary names, so a typo or a
    display-name/label-name mix-up (``Male speech, man speaking`` vs ``Male_speech...``) is
    obvious.
    """
    known = set(vocabulary)
    problems = []
    for name in requested:
        if name not in known:
            close = difflib.get_close_matches(name, list(vocabulary), n=3, cutoff=0.5)
            hint = f"closest: {', '.join(repr(c) for c in close)}" if close else "no close match"
            problems.append(f"  {name!r} ({hint})")
    if problems:
        raise ValueError(
            f"{len(problems)} class name(s) in {source} are not in the dataset's vocabulary:\n"
            + "\n".join(problems)
            + "\nFix the names in the class list (they must match the vocabulary exactly)."
        )
    return list(requested)
