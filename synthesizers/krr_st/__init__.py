"""KRR-ST (Lee et al., ICLR 2024): self-supervised dataset distillation by kernel ridge regression, in one home: the
synthesizer (:mod:`.synthesizer`), the model pool (:mod:`.pool`), the Barlow Twins teacher and its file format
(:mod:`.teacher`), and the official-file conversion (:mod:`.official`)."""
from __future__ import annotations

from .official import export_official, import_official
from .pool import ModelPool
from .synthesizer import KRRST, X_SPACES, KRRSTConfig, krr_predict
from .teacher import (OPTIMIZERS, BarlowTwins, BarlowTwinsAugment, BarlowTwinsConfig, LARS, TeacherFileError,
                      TeacherInfo, barlow_twins_loss, load_teacher, save_teacher, train_teacher, warmup_cosine)

__all__ = [
    "KRRST", "KRRSTConfig", "LARS", "ModelPool", "OPTIMIZERS", "BarlowTwins", "BarlowTwinsAugment",
    "BarlowTwinsConfig", "TeacherFileError", "TeacherInfo", "X_SPACES", "barlow_twins_loss", "export_official",
    "import_official", "krr_predict", "load_teacher", "save_teacher", "train_teacher", "warmup_cosine",
]
