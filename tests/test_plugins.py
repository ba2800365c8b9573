"""A synthesizer written outside the repository, installed with an entry point, is usable from the command line.
``PLUGIN`` is the README's minimal plugin module, word for word (a test keeps the two equal)."""
from __future__ import annotations

import sys
import textwrap

from ddistill.cli import main

PLUGIN = textwrap.dedent('''
    from dataclasses import dataclass

    import torch

    from synthesizers import SYNTHESIZERS, Synthesizer, selection_set


    @dataclass
    class FirstConfig:
        ipc: int = 1


    @SYNTHESIZERS.register("first_images")
    class FirstImages(Synthesizer):
        """The first ``ipc`` training images of every class."""

        Config = FirstConfig

        def synthesize(self, real):
            idx = torch.cat([real.class_indices(c)[: self.config.ipc] for c in range(real.num_classes)])
            return selection_set(self, real, idx, ipc=self.config.ipc)
''')


def test_an_entry_point_plugin_is_listed_and_runs(tmp_path, monkeypatch, capsys):
    from synthesizers import SYNTHESIZERS

    # The plugin registers into the process-wide registry: give this test a copy so others never see it.
    monkeypatch.setattr(SYNTHESIZERS, "_entries", dict(SYNTHESIZERS._entries))
    (tmp_path / "ddistill_first.py").write_text(PLUGIN)
    dist = tmp_path / "ddistill_first-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ddistill-first\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[ddistill.synthesizers]\nfirst_images = ddistill_first\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["list", "synthesizers"]) == 0
    assert "first_images" in capsys.readouterr().out.split()
    config = tmp_path / "run.yaml"
    config.write_text(f"name: p\nout_dir: {tmp_path / 'runs'}\ndataset: {{name: digits}}\n"
                      f"synthesizer: {{name: first_images, ipc: 2}}\ngrid: false\n")
    assert main(["distill", str(config)]) == 0
    assert (tmp_path / "runs" / "p" / "synset.pt").exists()
    sys.modules.pop("ddistill_first", None)


def test_the_readme_shows_this_plugin():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert PLUGIN.strip() in readme


def test_a_broken_plugin_is_named(tmp_path, monkeypatch, capsys):
    (tmp_path / "ddistill_broken.py").write_text("raise ImportError('needs foo')\n")
    dist = tmp_path / "ddistill_broken-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ddistill-broken\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[ddistill.evaluators]\nbroken = ddistill_broken\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["list", "evaluators"]) == 2
    err = capsys.readouterr().err
    assert "'broken' (ddistill_broken)" in err and "needs foo" in err and "Traceback" not in err
