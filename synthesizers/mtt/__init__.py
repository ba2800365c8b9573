"""Trajectory matching (MTT, Cazenavette et al., CVPR 2022) with AST's smooth experts (Shen, Yang & Lam 2023), in one
home: the synthesizer (:mod:`.synthesizer`), the student unroll (:mod:`.unroll`), expert training and its run config
(:mod:`.experts`), and the expert file format (:mod:`.expert_file`)."""
from __future__ import annotations

from .expert_file import (STORAGE_DTYPES, ExpertBuffer, ExpertFile, ExpertFileError, ParamLayout, expert_paths,
                          load_flat_, merge_expert_files)
from .experts import (AST_CLIP_FACTORS, EXPERT_PRESETS, ExpertConfig, ExpertLoss, ExpertRunConfig,
                      expert_config_from_preset, expert_family, gradient_penalty, new_expert_file, train_expert,
                      trajectory_smoothness)
from .synthesizer import (AST_SWITCHES, PRESETS, MTTConfig, TrajectoryMatching, balance_factor, kmeans,
                          perturb_conv_weights, representative_indices, same_encoding)
from .unroll import InnerPlan, TrajectoryUnroll

__all__ = [
    "AST_CLIP_FACTORS", "AST_SWITCHES", "EXPERT_PRESETS", "ExpertBuffer", "ExpertConfig", "ExpertFile",
    "ExpertFileError", "ExpertLoss", "ExpertRunConfig", "InnerPlan", "MTTConfig", "PRESETS", "ParamLayout",
    "STORAGE_DTYPES", "TrajectoryMatching", "TrajectoryUnroll", "balance_factor", "expert_config_from_preset",
    "expert_family", "expert_paths", "gradient_penalty", "kmeans", "load_flat_", "merge_expert_files",
    "new_expert_file", "perturb_conv_weights", "representative_indices", "same_encoding", "train_expert",
    "trajectory_smoothness",
]
