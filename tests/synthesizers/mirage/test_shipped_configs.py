"""Every shipped Mirage config distils to less than the data it came from: on its real data (when staged), every
support it can use (``support``, or every ``support_schedule`` entry) mines a set whose bytes are below the whole
training set's in the same encoding (compression ratio < 1). Only the mined size is checked (no GNN is trained)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

pytest.importorskip("torch_geometric")

from ddistill import config  # noqa: E402
from ddistill.cli import RunConfig  # noqa: E402
from ddistill.config import from_dict  # noqa: E402
from ddistill.data import load_data  # noqa: E402
from synthesizers.mirage import Mirage, MirageConfig  # noqa: E402

REPO = Path(__file__).resolve().parents[3]
CONFIGS = sorted((REPO / "scripts" / "configs" / "mirage").glob("*.yaml"))


def _mirage_blocks():
    for path in CONFIGS:
        run = config.from_dict(RunConfig, config.load(path), where=str(path))
        if run.synthesizer.get("name") == "mirage":
            yield pytest.param(path, run, id=path.stem)


def test_there_are_shipped_mirage_configs():
    assert len(list(_mirage_blocks())) >= 3


@pytest.mark.parametrize("path,run", list(_mirage_blocks()))
def test_shipped_config_compresses(path, run):
    spec = run.dataset
    root = (REPO / spec.root).resolve() if spec.root and not Path(spec.root).is_absolute() else spec.root
    if root is None or not Path(root).exists():
        pytest.skip(f"{spec.root} (the data of {path.name}) is not staged on this machine")
    data, _ = load_data(dataclasses.replace(spec, root=str(root)))  # the CLI's path, kwargs checked
    block = {k: v for k, v in run.synthesizer.items() if k not in ("name", "preset")}
    cfg = Mirage.config_from_preset(run.synthesizer.get("preset"), **block)
    supports = cfg.support_schedule if cfg.support_schedule is not None else [cfg.support]
    for support in supports:
        one = from_dict(MirageConfig, {**config.to_dict(cfg), "support": support, "support_schedule": None,
                                       "progress": False})
        meta = Mirage(one).fit(data).meta
        ratio = meta["size"]["compression_ratio"]
        assert ratio == pytest.approx(meta["distilled_bytes"] / meta["full_tree_bytes"])
        assert ratio < 1.0, (f"{path.name} at support {support}: {meta['distilled_bytes']:,} B distilled vs "
                             f"{meta['full_tree_bytes']:,} B for the whole training set")
