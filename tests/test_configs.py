"""Every shipped YAML config parses into its typed dataclasses (a config cannot rot silently)."""
from pathlib import Path

import pytest

from ddistill import config
from ddistill.cli import RunConfig, _component
from evaluators import EVALUATORS
from synthesizers import SYNTHESIZERS

CONFIGS = sorted((Path(__file__).parent.parent / "scripts" / "configs").rglob("*.yaml"))


def test_configs_exist():
    assert len(CONFIGS) >= 5


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(p.parents[1])))
def test_config_parses(path):
    run = config.from_dict(RunConfig, config.load(path), where=str(path))
    _component(SYNTHESIZERS, run.synthesizer, "synthesizer")
    if run.evaluator is not None:
        _component(EVALUATORS, run.evaluator, "evaluator")
