"""Every shipped YAML config parses into its typed dataclasses (a config cannot rot silently)."""
from pathlib import Path

import pytest

from ddistill import config
from ddistill.cli import RunConfig
from ddistill.config import build_component
from evaluators import EVALUATORS
from synthesizers import SYNTHESIZERS

ROOT = Path(__file__).parent.parent / "scripts" / "configs"
# experts/ holds expert-training configs (another shape), checked in tests/trajectory/test_trajectory_configs.py.
CONFIGS = sorted(p for p in ROOT.rglob("*.yaml") if "experts" not in p.relative_to(ROOT).parts)


def test_configs_exist():
    assert len(CONFIGS) >= 5


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(p.parents[1])))
def test_config_parses(path):
    run = config.from_dict(RunConfig, config.load(path), where=str(path))
    build_component(SYNTHESIZERS, run.synthesizer, "synthesizer")
    if run.evaluator is not None:
        build_component(EVALUATORS, run.evaluator, "evaluator")
