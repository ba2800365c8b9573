"""ddistill: dataset distillation in PyTorch.

The core package (data, models, augmentation, the SyntheticSet format and the other artefacts, registries, config,
training utilities). The methods live in the plugin packages ``synthesizers`` and ``evaluators``, which import this
one. No core module imports them; the command line, :mod:`ddistill.cli`, is the application layer on top of both
(tests/test_layering.py enforces this).
"""
from __future__ import annotations

__version__ = "0.1.0"

from .models import create_model, list_models  # noqa: E402
from .registry import Registry  # noqa: E402
from .synset import SyntheticSet  # noqa: E402

__all__ = ["Registry", "SyntheticSet", "__version__", "create_model", "list_models"]
