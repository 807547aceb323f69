"""Distillation methods, one module each, registered in ``METHODS``."""

from exdistill.methods import dm, edd, gradient, herding, mtt, random_subset  # noqa: F401  (registration)
from exdistill.methods.base import (
    METHODS,
    CliOption,
    DistillContext,
    DistillResult,
    MethodSpec,
    resolve_config,
)

__all__ = [
    "METHODS",
    "CliOption",
    "DistillContext",
    "DistillResult",
    "MethodSpec",
    "resolve_config",
]
