"""The pruning-criteria table: built-ins listed by name, user criteria as one class, errors of the right class."""
import pytest
import torch

from autoprune_edge.autoprune import AutoPruneConfig
from autoprune_edge.errors import ConfigError, UnknownMethodError
from autoprune_edge.graph import PruningGraph
from autoprune_edge.methods import METHODS, Criterion, L1Norm, channel_scores, get_criterion, register
from autoprune_edge.profiles.counting import count_macs
from autoprune_edge.pruning import prune
from toy_models import SmallCNN

SHAPE = (1, 3, 16, 16)


class KeepFirst(Criterion):
    """Toy criterion: the lowest channel indices are the most important."""

    description = "keeps the first channels of every group (a test toy)"

    def __init__(self):
        self.calls = 0

    def scores(self, graph, *, data=None, seed=0):
        self.calls += 1
        return [torch.linspace(2.0, 0.0, g.size) for g in graph.groups]


def _budget(frac=0.7):
    return f"{int(count_macs(SmallCNN(), torch.zeros(SHAPE)).macs * frac)}MACs"


def test_builtins_are_registered_with_descriptions():
    assert list(METHODS)[:6] == ["autoprune", "l1", "bn", "taylor", "random", "uniform"]
    for name, cls in METHODS.items():
        assert cls.name == name and cls.description and issubclass(cls, Criterion)
    assert KeepFirst.name == "keepfirst"  # the class name when none is given


def test_unknown_method_is_one_error_naming_the_registered_ones():
    with pytest.raises(UnknownMethodError, match=r"unknown pruning method 'magic'; choose one of: autoprune, l1, bn"):
        get_criterion("magic")
    with pytest.raises(UnknownMethodError, match="magic"):
        prune(SmallCNN(), None, _budget(), method="magic", input_shape=SHAPE, finetune_epochs=0)


def test_user_criterion_instance_prunes_through_prune():
    crit = KeepFirst()
    r = prune(SmallCNN(), None, _budget(), method=crit, input_shape=SHAPE, finetune_epochs=0)
    assert crit.calls == 1 and r.method == "keepfirst" and r.groups_pruned > 0
    assert r.macs_after <= count_macs(SmallCNN(), torch.zeros(SHAPE)).macs * 0.7
    # the criterion decided which channels go: every removed index is a trailing one
    dense = dict(SmallCNN().named_modules())
    assert r.history
    for root, is_out, removed in r.history:
        layer = dense[root]
        width = layer.weight.shape[0] if is_out else layer.weight.shape[1]
        assert sorted(removed) == list(range(width - len(removed), width)), root


def test_user_criterion_registered_by_name():
    @register
    class Toy(KeepFirst):
        name = "toy"

    try:
        assert METHODS["toy"] is Toy and get_criterion("toy").name == "toy"
        r = prune(SmallCNN(), None, _budget(), method="toy", input_shape=SHAPE, finetune_epochs=0)
        by_instance = prune(SmallCNN(), None, _budget(), method=KeepFirst(), input_shape=SHAPE, finetune_epochs=0)
        assert r.method == "toy" and r.widths_after == by_instance.widths_after
        by_class = prune(SmallCNN(), None, _budget(), method=Toy, input_shape=SHAPE, finetune_epochs=0)
        assert by_class.widths_after == r.widths_after
    finally:
        METHODS.pop("toy", None)


def test_a_name_cannot_be_taken_by_another_class():
    class Other(KeepFirst):
        name = "l1"

    with pytest.raises(ValueError, match="already registered"):
        register(Other)
    assert METHODS["l1"] is L1Norm


def test_channel_scores_takes_a_name_or_an_object():
    torch.manual_seed(0)
    graph = PruningGraph(SmallCNN(), torch.randn(SHAPE))
    by_name = channel_scores(graph, "l1")
    by_object = channel_scores(graph, L1Norm())
    assert len(by_name) == len(graph.groups)
    assert all(torch.equal(a, b) for a, b in zip(by_name, by_object))


@pytest.mark.parametrize("kwargs,needle", [
    (dict(method="taylor", granularity="unstructured"), "autoprune \\(per-weight gates\\) or l1"),
    (dict(method="l1", granularity="diagonal"), "granularity must be structured or unstructured"),
    (dict(method="autoprune", autoprune=AutoPruneConfig(cost_exponent=2.0)), "cost exponent"),
    (dict(method="autoprune", autoprune=AutoPruneConfig(coupling_exponent=-1.0)), "coupling exponent"),
    (dict(method="taylor", data=None), "taylor scores need training data"),
])
def test_bad_settings_are_config_errors(kwargs, needle):
    from autoprune_edge.data import load_data

    kwargs.setdefault("data", load_data("synthetic", input_size=16, synthetic_train=8, synthetic_val=8))
    with pytest.raises(ConfigError, match=needle):
        prune(SmallCNN(), budget=_budget(), input_shape=SHAPE, finetune_epochs=0, evaluate_accuracy=False, **kwargs)
