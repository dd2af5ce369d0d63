"""A Torch-Pruning dependency graph that refuses to guess channel mappings.

Torch-Pruning (1.6.1) maps channel indices through reshapes, concats, splits and slices with rules that
assume NCHW tensors and channels on dim 1. Elsewhere it crashes (channel shuffle: ZeroDivisionError;
last-dim concat: TypeError), silently couples the wrong channels (identity through a shuffle), or expands
index lists without bound (window partitions / attention reshapes that fold channels into other dims).

`SafeDependencyGraph` decides every such mapping from the shapes autograd actually recorded (the input
and output sizes of each op) and the channel counts of the layers around it:

* a reshape that keeps the channel dim whole is an identity; one that merges the channel dim with the
  dims right after it (conv -> flatten -> linear) is Torch-Pruning's flatten mapping; one that splits it
  back (its inverse) is the unflatten mapping;
* a concat along the channel dim maps offsets; a split along it stays opaque (its sizes are constants
  of the model's code); along any other dim either is an identity (as is a slice along another dim, or
  one that takes every channel);
* a slice that takes only part of the channels (`x[:, 0:c]`), or an in-place write into part of them
  (`x[:, :c] += y`, `x[:, :c] = 0`: autograd's CopySlices, located from the view the recorder saw being
  written), has its bounds fixed in the model's code: after pruning they would select other channels;
* an element-wise op whose inputs carry different channel counts couples nothing sensible.

Anything else, and any mapping that raises or lands outside a layer's channels while groups are
enumerated, makes the node *opaque*: indices enter it (so every group that reaches it can be recognised)
but never leave it. Groups that touch an opaque node are reported by `opaque_reason` and left dense by
`PruningGraph`; all other groups keep their exact Torch-Pruning mappings.

Modules, in the order data flows through them:
  recorder     where each op came from, and in-place writes, recorded while Torch-Pruning traces
  shapes       recorded shapes and the arithmetic on them
  channels     what planning knows per node (`ChannelFacts`) and the op kinds it plans
  layout_ops   the planners of reshape / concat / split / slice / expand
  planner      the walk over the traced graph (`ChannelPlanner`), element-wise ops and in-place writes
  mappings     the index mappings installed on dependencies
  safe_graph   the Torch-Pruning adapter: `SafeDependencyGraph` and `opaque_reason`
"""
from .safe_graph import SafeDependencyGraph, opaque_reason

__all__ = ["SafeDependencyGraph", "opaque_reason"]
