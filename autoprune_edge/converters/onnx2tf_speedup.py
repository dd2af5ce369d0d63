"""Make onnx2tf's strict-mode validation linear instead of quadratic in depth (same output bytes).

Imported only inside the conversion subprocess (it imports TensorFlow). onnx2tf's strict mode is on by
default and is needed (``disable_strict_mode`` breaks ConvNeXt). For almost every op it validates, it
builds a Keras model from the graph inputs up to that op and runs it eagerly on the same test image
(``common_functions.dummy_tf_inference``): the whole graph built so far runs again once per op.
ConvNeXt-T: 256 such runs, about 100 of onnx2tf's 117 s.

While ``dummy_tf_inference`` runs, :func:`install` makes ``Functional._run_internal_graph`` reuse the
eager value of every KerasTensor already computed for the same input values (an LRU cache keyed by a
hash of the inputs and the tensor) and run only the nodes not computed yet. Those are the same layer
calls on the same values, so onnx2tf takes exactly the same decisions and writes byte-identical files
(checked on ConvNeXt-T, Swin-T, ViT-B/16, DenseNet-121, ResNet-18 and EfficientNet-B0; conversion 2-5x
faster on the deep ones). Anything unexpected in the cached walk falls back to the original walk.

It relies on tf_keras internals (``_nodes_by_depth``, ``Node.map_arguments``, ``_keras_history``) of the
pinned tensorflow/tf_keras 2.19 and onnx2tf 1.29.24; if they move, :func:`install` raises and the
driver converts unpatched (slower, same result).
"""
from __future__ import annotations

import hashlib
import sys
from collections import OrderedDict
from typing import Any


class _ValueCache:
    """Eager tensor values by (input fingerprint, KerasTensor), least recently used dropped first."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget = budget_bytes
        self.bytes = 0
        self.items: OrderedDict[tuple, tuple[Any, Any, int]] = OrderedDict()

    def get(self, fp: tuple, kt: Any) -> Any:
        e = self.items.get((fp, id(kt)))
        if e is None or e[0] is not kt:  # the entry holds kt itself, so its id cannot have been recycled
            return None
        self.items.move_to_end((fp, id(kt)))
        return e[1]

    def put(self, fp: tuple, kt: Any, value: Any) -> None:
        old = self.items.pop((fp, id(kt)), None)
        if old is not None:
            self.bytes -= old[2]
        n = int(value.shape.num_elements() or 0) * value.dtype.size
        self.items[(fp, id(kt))] = (kt, value, n)
        self.bytes += n
        while self.bytes > self.budget and len(self.items) > 1:
            self.bytes -= self.items.popitem(last=False)[1][2]


def install(budget_mb: int = 256) -> None:
    """Patch tf_keras/onnx2tf in this process (call after ``import onnx2tf``, before ``convert``)."""
    import numpy as np
    import onnx2tf.utils.common_functions as cf
    import tensorflow as tf
    from tf_keras.src.engine import functional
    from tf_keras.src.utils import tf_inspect

    orig_run = functional.Functional._run_internal_graph
    orig_dti = cf.dummy_tf_inference
    cache = _ValueCache(int(budget_mb * 2**20))
    active = [0]

    def fingerprint(model: Any, inputs: Any) -> tuple[tuple, dict[int, Any]]:
        vals, fp = {}, []
        for ref, y in zip(model.inputs, model._flatten_to_reference_inputs(inputs)):
            y = model._conform_to_reference_input(y, ref_input=ref)
            vals[id(ref)] = y
            a = np.ascontiguousarray(y.numpy())
            fp.append((ref.name, a.dtype.str, a.shape, hashlib.sha1(a.tobytes()).hexdigest()))
        return tuple(sorted(fp)), vals

    def cached_walk(model: Any, inputs: Any) -> Any:
        fp, vals = fingerprint(model, inputs)
        need, seen, stack = set(), set(), list(model.outputs)
        while stack:  # the nodes to run: walk back from the outputs to model inputs or cached tensors
            kt = stack.pop()
            if id(kt) in seen or id(kt) in vals:
                continue
            seen.add(id(kt))
            hit = cache.get(fp, kt)
            if hit is not None:
                vals[id(kt)] = hit
                continue
            layer, node_index, _ = kt._keras_history
            node = layer._inbound_nodes[node_index]
            if id(node) not in need:
                need.add(id(node))
                stack.extend(node.keras_inputs)
        for depth in sorted(model._nodes_by_depth, reverse=True):
            for node in model._nodes_by_depth[depth]:
                if node.is_input or id(node) not in need:
                    continue
                tensors: dict[str, list] = {}
                for kt in node.keras_inputs:
                    tensors.setdefault(str(id(kt)), []).append(vals[id(kt)])
                args, kwargs = node.map_arguments(tensors)
                outs = node.layer(*args, **kwargs)
                for kt, y in zip(tf.nest.flatten(node.outputs), tf.nest.flatten(outs)):
                    vals[id(kt)] = y
                    cache.put(fp, kt, y)
        return tf.nest.pack_sequence_as(model._nested_outputs, [vals[id(x)] for x in model.outputs])

    def run_internal_graph(self, inputs, training=None, mask=None):  # noqa: ANN001, ANN202
        if active[0] and mask is None and tf.executing_eagerly():
            try:
                return cached_walk(self, inputs)
            except Exception:  # noqa: BLE001 - anything unexpected: the original walk decides
                pass
        return orig_run(self, inputs, training=training, mask=mask)

    def dummy_tf_inference(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        active[0] += 1
        try:
            return orig_dti(*args, **kwargs)
        finally:
            active[0] -= 1

    functional.Functional._run_internal_graph = run_internal_graph
    # onnx2tf's op modules bind the name when they are imported (lazily, during convert): rebind it in
    # common_functions and in every onnx2tf module that already holds it.
    for name, mod in list(sys.modules.items()):
        if name.startswith("onnx2tf") and getattr(mod, "dummy_tf_inference", None) is orig_dti:
            mod.dummy_tf_inference = dummy_tf_inference

    # Functional.__init__ (one per validated op) runs getfullargspec(layer.call) for every layer of the
    # graph: cache it per call function (an argspec never changes; the cache keeps the key alive).
    orig_spec, specs = tf_inspect.getfullargspec, {}

    def getfullargspec(obj: Any) -> Any:
        key = getattr(obj, "__func__", obj)
        e = specs.get(id(key))
        if e is None or e[0] is not key:
            e = specs[id(key)] = (key, orig_spec(obj))
        return e[1]

    proxy = type(sys)(tf_inspect.__name__)
    proxy.__dict__.update(tf_inspect.__dict__)
    proxy.getfullargspec = getfullargspec
    functional.tf_inspect = proxy
