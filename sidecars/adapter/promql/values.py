"""Result types of an evaluation: a scalar, an instant vector of labelled samples, or a string."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

Labels = tuple[tuple[str, str], ...]
"""Label pairs sorted by name; `__name__` is one of them when the result keeps the metric name."""


class Sample(NamedTuple):
    labels: Labels
    value: float

    def label(self, name: str) -> str:
        for key, value in self.labels:
            if key == name:
                return value
        return ""


@dataclass(frozen=True, slots=True)
class Scalar:
    value: float


@dataclass(frozen=True, slots=True)
class StringValue:
    value: str


@dataclass(slots=True)
class InstantVector:
    samples: list[Sample] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.samples)

    def by_labels(self) -> dict[Labels, float]:
        return {s.labels: s.value for s in self.samples}


Value = Scalar | InstantVector | StringValue
