"""The README's "Library use" snippet runs as printed (with a smaller budget), so an API change that breaks it fails
here rather than in a reader's hands."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from ddistill.utils.perf import PerfConfig
from tests._helpers import one_torch_thread

ROOT = Path(__file__).resolve().parents[1]


def library_use_snippet() -> str:
    """The first ```python block under the README's "## Library use" heading."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Library use\n", 1)
    assert len(section) == 2, "README.md has no '## Library use' section"
    section = section[1].split("\n## ", 1)[0]
    block = re.search(r"```python\n(.*?)```", section, re.S)
    assert block, "the '## Library use' section has no python block"
    return block.group(1)


def test_library_use_snippet_runs(tmp_path, monkeypatch, capsys):
    code = library_use_snippet()
    # As written the snippet takes many minutes on a 2-core CPU (300 DM iterations, 5 + 5 networks x 300 epochs, and
    # torch.compile on CPU when a C++ compiler is present). The test runs the same code with 100 iterations (the
    # checkpoint every 100 still fires) and 20 epochs, eagerly (no compile warm-up): about 30 s on 2 busy cores.
    for old, new in (("iterations=300", "iterations=100"), ("epochs=300", "epochs=20")):
        assert old in code, f"the snippet no longer contains {old!r}; update this test's budget reduction"
        code = code.replace(old, new)
    resolve = PerfConfig.resolve

    def eager(self, *args, **kwargs):  # whatever the auto rule decides, no torch.compile
        return dataclasses.replace(resolve(self, *args, **kwargs), compile=False)

    monkeypatch.setattr(PerfConfig, "resolve", eager)
    monkeypatch.chdir(tmp_path)  # the snippet writes ckpt.pt into the working directory
    with one_torch_thread():
        exec(compile(code, "README.md (Library use)", "exec"), {"__name__": "__main__"})
    out = capsys.readouterr().out
    score = re.search(r"accuracy (\d+\.\d+) ± \d+\.\d+ over 5 models", out)
    assert score, f"no accuracy line in the snippet's output:\n{out}"
    assert float(score.group(1)) > 30.0, f"accuracy not above 30 % (chance: 10 % on 10 classes):\n{out}"
    control = re.search(r"control random_subset: (\d+\.\d+)", out)
    assert control, f"the printed result shows no random-subset control:\n{out}"
    assert float(control.group(1)) > 30.0, out
    assert (tmp_path / "ckpt.pt").is_file(), "the Checkpoint callback wrote no ckpt.pt in the working directory"
