"""Real data: the episode store, collection, training sequences and the start bank."""

from dreamenv.data.collect import Collector, HeldRandomPolicy, Policy, RandomPolicy, collect
from dreamenv.data.store import Episode, EpisodeStore

__all__ = [
    "Collector",
    "Episode",
    "EpisodeStore",
    "HeldRandomPolicy",
    "Policy",
    "RandomPolicy",
    "collect",
]
