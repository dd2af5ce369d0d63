"""One exception hierarchy. The CLI prints these as one line and exits 2; anything else is a bug."""


class AutoPruneEdgeError(Exception):
    """Base class for every error the user can cause and fix."""


class UnknownModelError(AutoPruneEdgeError):
    pass


class UnknownTargetError(AutoPruneEdgeError):
    pass


class UnknownMethodError(AutoPruneEdgeError):
    """A pruning method name that no criterion is registered under."""


class ConfigError(AutoPruneEdgeError):
    """An option, or a combination of options, that cannot work (a distillation alpha, a ramp shape, ...)."""


class TargetProfileError(AutoPruneEdgeError):
    """A target TOML file is malformed or misses a key."""


class BudgetError(AutoPruneEdgeError):
    """A budget string cannot be parsed, or cannot be met."""


class BudgetUnreachableError(BudgetError):
    pass


class DataError(AutoPruneEdgeError):
    """A data spec or directory is missing or corrupt."""


class WeightsError(AutoPruneEdgeError):
    """A weights file is missing, corrupt or does not match the model."""


class OutputDirError(AutoPruneEdgeError):
    """The output directory cannot be written."""


class GraphError(AutoPruneEdgeError):
    """The model cannot be traced or pruned as asked."""


class EquivalenceError(AutoPruneEdgeError):
    """The compacted model does not compute what the masked model computes."""


class ConversionError(AutoPruneEdgeError):
    """Export or conversion of an artifact failed."""


class ParityError(ConversionError):
    """An artifact's outputs differ from torch by more than the threshold."""


class PartialBuildError(ParityError):
    """Some artifacts failed their check: the ones that passed were written, the failing ones withheld.

    ``out_dir`` is the folder that was written; ``report`` (when set) is what build() would have returned.
    """

    def __init__(self, message: str, out_dir: object = None, withheld: list[str] | None = None,
                 report: object = None) -> None:
        super().__init__(message)
        self.out_dir, self.withheld, self.report = out_dir, list(withheld or []), report


class DeviceError(AutoPruneEdgeError):
    """A device or precision is unknown, or this machine cannot train with it."""
