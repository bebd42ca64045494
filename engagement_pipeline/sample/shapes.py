"""The shapes of volunteer behaviour the generator can simulate, by name (`--shape`).

Every shape writes the same export format; they differ in what drives a session's end, so a model
tuned on one can be evaluated on another (see each module's docstring):

    default   one latent "stayer" trait, a session length drawn up front, a fatigue stretch before leaving
    traits    persistent traits (usual length, pace) and three causes of stopping: tiring (slowing
              down first), a hazard rising with session length, memoryless interruptions
    habits    habitual task counts per workflow, deadlines set by the local hour, a weekly rhythm
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from engagement_pipeline.sample import habits, traits, volunteers

Batch = dict[str, dict[str, np.ndarray]]  # "users", "sessions", "rows" -> column -> array


@dataclass(frozen=True)
class Shape:
    simulate_batch: Callable[[np.random.Generator, int], Batch]
    rows_per_user: float  # sizes a batch: about this many classifications per volunteer


SHAPES = {
    "default": Shape(volunteers.simulate_batch, volunteers.ROWS_PER_USER_GUESS),
    "traits": Shape(traits.simulate_batch, traits.ROWS_PER_USER_GUESS),
    "habits": Shape(habits.simulate_batch, habits.ROWS_PER_USER_GUESS),
}
DEFAULT_SHAPE = "default"


def shape_named(name: str) -> Shape:
    if name not in SHAPES:
        raise ValueError(f"unknown sample shape {name!r}: choose one of {', '.join(SHAPES)}")
    return SHAPES[name]
