"""A trained classifier as a self-describing file (``ddistill.classifier``): the teacher of soft-label evaluations,
reusable across evaluations instead of being retrained each time.

    {"format": "ddistill.classifier", "version": 1, "model", "model_kwargs", "model_args": {in_channels, num_classes,
     image_size}, "state_dict", "encoding", "encoding_tensors", "dataset", "class_names", "recipe", "seed",
     "test_accuracy", "ddistill_version"}

Loads with ``weights_only=True``; the encoding is checked against the data it is used on.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import __version__
from .data import Encoding, RealData
from .io import ArtifactError, load_artifact, save_artifact
from .models import ModelFamily, create_model
from .utils.perf import PerfConfig
from .utils.seed import derive_seed, make_generator
from .utils.train import TrainRecipe, train_classifier

__all__ = ["ClassifierFileError", "load_classifier", "save_classifier", "train_real_classifier"]

FORMAT = "ddistill.classifier"
VERSION = 1

#: ``derive_seed`` streams of :func:`train_real_classifier`.
_INIT_STREAM, _TRAIN_STREAM = 0x7C1, 0x7C2


class ClassifierFileError(ArtifactError):
    """A file is not a readable ddistill classifier."""


def train_real_classifier(real: RealData, model: str, model_kwargs: dict[str, Any], recipe: TrainRecipe, *,
                          seed: int, device: torch.device | str = "cpu", perf: PerfConfig | None = None,
                          augment: nn.Module | None = None, progress: bool | str = False) -> nn.Module:
    """A network trained on the whole real training split (hard labels), e.g. a soft-label teacher.

    Returns the module in eval mode with frozen parameters.
    """
    family = ModelFamily(model, in_channels=int(real.x.shape[1]), num_classes=real.num_classes,
                         image_size=tuple(real.x.shape[2:]), seed=derive_seed(seed, _INIT_STREAM), **model_kwargs)
    net = family.build(0, device)
    perf = perf or PerfConfig(False, False, False)
    train_classifier(perf.prepare_model(net), real.x.to(device), real.y.to(device), recipe, augment=augment,
                     generator=make_generator(derive_seed(seed, _TRAIN_STREAM)), perf=perf, progress=progress)
    net.eval()
    net.requires_grad_(False)
    return net


def save_classifier(path: str | os.PathLike, net: nn.Module, *, model: str, model_kwargs: dict[str, Any],
                    real: RealData, recipe: dict[str, Any] | None = None, seed: int | None = None,
                    test_accuracy: float | None = None) -> Path:
    """Writes ``net`` (built as ``create_model(model, ..., **model_kwargs)`` for ``real``'s shape) atomically."""
    return save_artifact({
        "model": model, "model_kwargs": dict(model_kwargs),
        "model_args": {"in_channels": int(real.x.shape[1]), "num_classes": int(real.num_classes),
                       "image_size": [int(s) for s in real.x.shape[2:]]},
        "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "encoding": real.encoding.to_meta(), "encoding_tensors": {k: v.cpu() for k, v in real.encoding.tensors().items()},
        "dataset": real.info.name, "class_names": list(real.info.class_names), "recipe": recipe, "seed": seed,
        "test_accuracy": test_accuracy, "ddistill_version": __version__,
    }, path, format=FORMAT, version=VERSION)


def load_classifier(path: str | os.PathLike, *, device: torch.device | str = "cpu",
                    encoding: Encoding | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Reads a classifier file; returns ``(network in eval mode, frozen; its header without the weights)``.

    Raises:
        ClassifierFileError: foreign / truncated / newer file, weights that do not fit, or (with ``encoding``) a
            network trained on differently encoded inputs.
    """
    blob = load_artifact(path, format=FORMAT, what="classifier", max_version=VERSION, error=ClassifierFileError,
                         required=("model", "model_kwargs", "model_args", "state_dict", "encoding"))
    if encoding is not None and blob["encoding"] != encoding.to_meta():
        raise ClassifierFileError(f"{path} was trained on inputs encoded as {blob['encoding']}, not as the data it "
                                  f"is used on ({encoding.to_meta()})")
    if encoding is not None:
        # The metadata names the transform, the tensors are it: a ZCA fitted on other images whitens differently.
        stored = blob.get("encoding_tensors") or {}
        differ = sorted(k for k, v in encoding.tensors().items()
                        if k not in stored or not torch.equal(stored[k].cpu(), v.detach().cpu()))
        if differ:
            raise ClassifierFileError(f"{path} was trained on inputs encoded with other {', '.join(differ)} than the "
                                      f"data it is used on (the same transform fitted on other images)")
    args = blob["model_args"]
    try:
        with torch.random.fork_rng(devices=[]):  # the weights are overwritten: leave the caller's RNG alone
            net = create_model(blob["model"], in_channels=args["in_channels"], num_classes=args["num_classes"],
                               image_size=tuple(args["image_size"]), **blob["model_kwargs"])
        net.load_state_dict(blob["state_dict"])
    except (KeyError, RuntimeError, TypeError) as e:
        raise ClassifierFileError(f"{path}: the stored weights do not fit model {blob['model']!r}: "
                                  f"{str(e).splitlines()[0]}") from None
    net = net.to(device).eval()
    net.requires_grad_(False)
    return net, {k: v for k, v in blob.items() if k != "state_dict"}
