"""ddistill: dataset distillation in PyTorch.

The core package (data, models, augmentation, the SyntheticSet format, registries, config); the methods
live in the top-level ``synthesizers`` and ``evaluators`` packages, which import this one (never the
reverse, except the command line in :mod:`ddistill.cli`).
"""
from __future__ import annotations

__version__ = "0.1.0"

from .models import create_model, list_models  # noqa: E402
from .registry import Registry  # noqa: E402
from .synset import SyntheticSet  # noqa: E402

__all__ = ["Registry", "SyntheticSet", "__version__", "create_model", "list_models"]
