"""The shipped trajectory-matching configs parse: run configs through the registry (scripts/configs/mtt/), expert
configs through :class:`synthesizers.mtt.experts.ExpertRunConfig` (scripts/configs/experts/)."""
from __future__ import annotations

from pathlib import Path

import pytest

from ddistill import config
from ddistill.cli import RunConfig
from ddistill.config import build_component
from evaluators import EVALUATORS
from synthesizers import SYNTHESIZERS
from synthesizers.mtt.experts import ExpertRunConfig

ROOT = Path(__file__).resolve().parents[3] / "scripts"
MTT_CONFIGS = sorted((ROOT / "configs" / "mtt").glob("*.yaml"))
EXPERT_CONFIGS = sorted((ROOT / "configs" / "experts").glob("*.yaml"))


def test_configs_exist():
    assert len(MTT_CONFIGS) >= 7 and len(EXPERT_CONFIGS) >= 5


@pytest.mark.parametrize("path", MTT_CONFIGS, ids=lambda p: p.name)
def test_mtt_config_parses_and_matches_its_experts(path):
    run = config.from_dict(RunConfig, config.load(path), where=str(path))
    cls, cfg = build_component(SYNTHESIZERS, run.synthesizer, "synthesizer")
    assert cls.name == "mtt" and cfg.experts
    _, ecfg = build_component(EVALUATORS, run.evaluator, "evaluator")
    assert ecfg.train.lr == "learned"
    # The experts must be trained with the same encoding and cover the start epochs.
    expert_cfg = ROOT / "configs" / "experts" / f"{Path(cfg.experts).name}.yaml"
    experts = ExpertRunConfig.load(expert_cfg)
    assert experts.dataset.zca == run.dataset.zca and experts.dataset.name == run.dataset.name
    assert cfg.max_start_epoch - 1 + cfg.expert_epochs <= experts.expert_config().epochs


@pytest.mark.parametrize("path", EXPERT_CONFIGS, ids=lambda p: p.name)
def test_expert_config_parses(path):
    run = ExpertRunConfig.load(path)
    cfg = run.expert_config()
    assert cfg.preset in ("mtt", "ast") and cfg.model == "convnet"
    assert run.name == path.stem
