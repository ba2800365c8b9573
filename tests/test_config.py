from dataclasses import dataclass, field

import pytest
import yaml

from ddistill import config


@dataclass
class Inner:
    lr: float = 0.1
    steps: int = 3


@dataclass
class Outer:
    name: str = "x"
    inner: Inner = field(default_factory=Inner)
    sizes: list[int] = field(default_factory=list)
    maybe: int | None = None
    flag: bool = False


def test_yaml_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: run\ninner: {lr: 1e-3}\n")
    data = config.load(path, ["inner.steps=7", "sizes=[1, 2]", "flag=true", "maybe=null"])
    cfg = config.from_dict(Outer, data)
    # PyYAML reads 1e-3 as a string; coercion by field type makes it a float.
    assert cfg.inner.lr == pytest.approx(1e-3) and isinstance(cfg.inner.lr, float)
    assert cfg.inner.steps == 7 and cfg.sizes == [1, 2] and cfg.flag is True and cfg.maybe is None


def test_unknown_key_lists_valid_keys():
    with pytest.raises(config.ConfigError, match=r"unknown key\(s\) \['lrr'\] in inner; valid keys: \['lr', 'steps'\]"):
        config.from_dict(Outer, {"inner": {"lrr": 1}})


def test_bad_values():
    with pytest.raises(config.ConfigError, match="expected int"):
        config.from_dict(Inner, {"steps": "many"})
    with pytest.raises(config.ConfigError, match="expected true/false"):
        config.from_dict(Outer, {"flag": "yes please"})
    with pytest.raises(config.ConfigError, match="key=value"):
        config.load(None, ["nonsense"])


def test_resolved_dump_round_trip(tmp_path):
    cfg = config.from_dict(Outer, {"name": "r", "inner": {"lr": "1e-4"}, "sizes": [3]})
    config.dump(cfg, tmp_path / "resolved.yaml")
    again = config.from_dict(Outer, yaml.safe_load((tmp_path / "resolved.yaml").read_text()))
    assert again == cfg


def test_an_optional_blocks_own_check_is_the_message():
    # `lr_search: LRSearchConfig | None`: a bad value inside it says what is wrong, not "fits none of ... | None".
    from evaluators.classifier import ClassifierConfig

    with pytest.raises(config.ConfigError,
                       match=r"^evaluator.lr_search: lr_search.grid needs positive rates, got \[-1.0\]$"):
        config.from_dict(ClassifierConfig, {"lr_search": {"grid": [-1]}}, where="evaluator")
    with pytest.raises(config.ConfigError, match="^evaluator.lr_search: expected a mapping for LRSearchConfig, got 3$"):
        config.from_dict(ClassifierConfig, {"lr_search": 3}, where="evaluator")


def test_a_preset_for_a_component_without_presets_names_those_with_them():
    from evaluators import EVALUATORS

    with pytest.raises(config.ConfigError, match=r"the continual evaluator has no presets \(preset 'common'\); "
                                                 r"evaluators with presets: \['classifier'\]"):
        config.build_component(EVALUATORS, {"name": "continual", "preset": "common"}, "evaluator")
