"""A ``res_DataDAM_*.pt`` written exactly as the official DataDAM ``main_DataDAM.py`` writes it, imported through the
command line with ``--experiment -1``.

What the official loop does (DataDistillation/DataDAM, main_DataDAM.py): ``image_syn`` is a leaf tensor with
``requires_grad=True``, ``label_syn`` a class-major int64 *view* built from numpy rows; at every evaluation point
(before that iteration's update) it appends ``[copy.deepcopy(image_syn.detach().cpu()), copy.deepcopy(label_syn.detach()
.cpu())]`` to ``data_save`` and re-saves ``{'data': data_save, 'accs_all_exps': accs_all_exps}``. The accuracies of an
experiment are appended to ``accs_all_exps`` after its last save, so a file holds the (numpy float) accuracies of the
earlier experiments only, and ``data_save`` runs on across experiments (``--num_exp``)."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from ddistill.cli import main
from ddistill.synset import SyntheticSet

NUM_CLASSES, IPC, NUM_EXP = 10, 3, 2
EVAL_IT_POOL = [0, 2, 4]  # np.arange(0, Iteration + 1, 2000) with a small stride, to keep the test short


def _official_res_file(path, real):
    """Runs the official save logic (the image update replaced by a seeded perturbation) and returns the snapshots."""
    channel, (h, w) = real.info.in_channels, real.info.image_size
    accs_all_exps = {"ConvNet": []}
    data_save = []
    g = torch.Generator().manual_seed(0)
    for exp in range(NUM_EXP):
        image_syn = torch.randn(size=(NUM_CLASSES * IPC, channel, h, w), dtype=torch.float, requires_grad=True)
        rows = np.array([np.ones(IPC) * i for i in range(NUM_CLASSES)])
        label_syn = torch.tensor(rows, dtype=torch.long, requires_grad=False).view(-1)  # [0,0,0, 1,1,1, ..., 9,9,9]
        for c in range(NUM_CLASSES):  # init 'real': encoded real images of each class
            image_syn.data[c * IPC:(c + 1) * IPC] = real.x[real.class_indices(c)[exp * IPC:(exp + 1) * IPC]]
        for it in range(EVAL_IT_POOL[-1] + 1):
            if it in EVAL_IT_POOL:
                # evaluate_synset's accuracy: epoch() divides a numpy sum by a count -> numpy float64
                accs = [np.sum(np.array([3, 4])) / np.float64(10 + it)]
                if np.mean(accs) > 0:  # `> max_mean`, which the official code never raises above 0
                    data_save.append([copy.deepcopy(image_syn.detach().cpu()), copy.deepcopy(label_syn.detach().cpu())])
                    torch.save({"data": data_save, "accs_all_exps": accs_all_exps, }, path)
                if it == EVAL_IT_POOL[-1]:
                    accs_all_exps["ConvNet"] += accs
            with torch.no_grad():  # stands in for optimizer_img.step()
                image_syn += 0.01 * torch.randn(image_syn.shape, generator=g)
    return data_save, accs_all_exps


def test_official_datadam_file_through_the_cli(tmp_path, digits, capsys):
    real, _ = digits
    path = tmp_path / f"res_DataDAM_digits_ConvNet_{IPC}ipc_.pt"
    snapshots, accs = _official_res_file(path, real)
    # In memory the official code ends with every experiment's accuracy (numpy floats); the file was last saved
    # before the last experiment's were appended, so it holds those of the earlier experiments only.
    assert isinstance(accs["ConvNet"][0], np.float64) and len(accs["ConvNet"]) == NUM_EXP
    saved = accs["ConvNet"][:NUM_EXP - 1]
    n = len(snapshots)
    assert n == NUM_EXP * len(EVAL_IT_POOL)
    out = tmp_path / "imported.pt"

    # Without --experiment a many-snapshot DataDAM file is refused, in one line that names the choice.
    assert main(["import", "dc_res", str(path), "--dataset", "digits", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ddistill: error: ") and err.count("\n") == 1 and "--experiment -1" in err
    assert f"holds {n} DataDAM snapshots" in err and not out.exists()

    assert main(["import", "dc_res", str(path), "--dataset", "digits", "--experiment", "-1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"imported {NUM_CLASSES * IPC} images ({NUM_CLASSES} classes, ipc {IPC}, hard labels, no lr)" in printed
    assert f"data[{n - 1}] of {n} taken" in printed
    synset = SyntheticSet.load(out)
    last_x, last_y = snapshots[-1]
    assert synset.x.dtype == torch.float32 and torch.equal(synset.x, last_x)  # bit for bit
    assert synset.y.dtype == torch.int64 and torch.equal(synset.y, last_y)
    assert torch.equal(synset.y, torch.arange(NUM_CLASSES).repeat_interleave(IPC))
    assert not torch.equal(synset.x, snapshots[-2][0])  # the latest snapshot, not an earlier one
    meta = synset.meta
    assert meta["synthesizer"] == "imported:dc_res" and meta["labels"] == "hard" and meta["ipc"] == IPC
    assert meta["dataset"] == "digits" and meta["num_classes"] == NUM_CLASSES and meta["data"]["name"] == "digits"
    assert meta["encoding"]["normalize"] and not meta["encoding"]["zca"]
    assert meta["encoding"] == real.encoding.to_meta()  # the dataset's mean/std, as the official code normalises
    imp = meta["imported"]
    assert imp["format"] == "dc_res" and imp["files"] == {"result": str(path)}
    assert imp["experiment"] == n - 1 and imp["pairs_in_file"] == n
    assert imp["pairs_are"] == "snapshots over evaluation points (DataDAM)"
    assert imp["accs_all_exps"] == {"ConvNet": [pytest.approx(float(a)) for a in saved]}
    assert all(type(a) is float for a in imp["accs_all_exps"]["ConvNet"])  # JSON-able, no numpy scalars left
    assert "lr" not in synset.tensors

    # --experiment 0: the first snapshot, the initialisation of the first experiment (encoded real images).
    first = tmp_path / "first.pt"
    assert main(["import", "dc_res", str(path), "--dataset", "digits", "--experiment", "0", "--out", str(first)]) == 0
    init = SyntheticSet.load(first)
    assert torch.equal(init.x, snapshots[0][0])
    assert torch.equal(init.x[:IPC], real.x[real.class_indices(0)[:IPC]])
    assert init.meta["imported"]["experiment"] == 0
