"""Hooks that put the loop-agnostic `Pruner` into other people's trainers (imported on demand: each one
needs its trainer installed, e.g. ``pip install autoprune-edge[lightning]``)."""
