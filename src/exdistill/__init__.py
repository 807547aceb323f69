"""exdistill: dataset distillation with EDD (Exclusive Dataset Distillation)."""

__version__ = "0.1.0"
