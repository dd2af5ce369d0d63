"""Channel-selection methods: a table of criteria that score channels; `selection` turns scores into a
budgeted plan. Importing this package registers the built-in criteria (autoprune first, the default)."""
from .registry import METHODS, Criterion, CriterionLike, get_criterion, register
from .learned import AutoPrune
from .importance import BNScale, L1Norm, RandomScores, Taylor, Uniform, channel_scores

__all__ = ["METHODS", "AutoPrune", "BNScale", "Criterion", "CriterionLike", "L1Norm", "RandomScores", "Taylor",
           "Uniform", "channel_scores", "get_criterion", "register"]
