"""Channel-selection methods. Each one scores channels; `selection` turns scores into a budgeted plan."""
from .importance import METHODS, channel_scores

__all__ = ["METHODS", "channel_scores"]
