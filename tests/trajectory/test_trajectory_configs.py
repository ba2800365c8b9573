"""The shipped trajectory-matching configs parse: run configs through the registry (scripts/configs/mtt/), expert
configs through scripts/train_experts.py's schema (scripts/configs/experts/)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

import synthesizers.mtt  # noqa: F401  (registers "mtt")
from ddistill import config
from ddistill.cli import RunConfig, _component
from evaluators import EVALUATORS
from synthesizers.base import SYNTHESIZERS

ROOT = Path(__file__).resolve().parents[2] / "scripts"
MTT_CONFIGS = sorted((ROOT / "configs" / "mtt").glob("*.yaml"))
EXPERT_CONFIGS = sorted((ROOT / "configs" / "experts").glob("*.yaml"))


def _script():
    spec = importlib.util.spec_from_file_location("train_experts_script", ROOT / "train_experts.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_configs_exist():
    assert len(MTT_CONFIGS) >= 7 and len(EXPERT_CONFIGS) >= 5


@pytest.mark.parametrize("path", MTT_CONFIGS, ids=lambda p: p.name)
def test_mtt_config_parses_and_matches_its_experts(path):
    run = config.from_dict(RunConfig, config.load(path), where=str(path))
    cls, cfg = _component(SYNTHESIZERS, run.synthesizer, "synthesizer")
    assert cls.name == "mtt" and cfg.experts
    _, ecfg = _component(EVALUATORS, run.evaluator, "evaluator")
    assert ecfg.lr == "learned"
    # The experts must be trained with the same encoding and cover the start epochs.
    expert_cfg = ROOT / "configs" / "experts" / f"{Path(cfg.experts).name}.yaml"
    experts = _script().load_config(expert_cfg)
    assert experts.dataset.zca == run.dataset.zca and experts.dataset.name == run.dataset.name
    assert cfg.max_start_epoch - 1 + cfg.expert_epochs <= experts.expert_config().epochs


@pytest.mark.parametrize("path", EXPERT_CONFIGS, ids=lambda p: p.name)
def test_expert_config_parses(path):
    run = _script().load_config(path)
    cfg = run.expert_config()
    assert cfg.preset in ("mtt", "ast") and cfg.model == "convnet"
    assert run.name == path.stem
