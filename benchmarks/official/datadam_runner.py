"""Run the official DataDAM ``main_DataDAM.py`` on this CPU, unchanged, for a side-by-side comparison.

The official code is *not* part of ddistill and is never committed here: fetch it yourself
(``git clone https://github.com/DataDistillation/DataDAM``) and pass its folder as ``--official-dir``.
This wrapper only adapts the environment, not the method:

- torchvision's ``CIFAR10`` is replaced by a dataset with the same interface (``data`` HWC uint8,
  ``targets``, ``classes``) that serves the CIFAR-10 JPEG mirror through ddistill's ImageFolder loader,
  because nothing may be downloaded at run time;
- ``nn.Module.cuda`` becomes a no-op, because ``get_network`` calls ``.cuda()`` unconditionally;
- every step of the synthetic-image SGD optimiser is timestamped (seconds per iteration = differences
  of consecutive stamps, so the evaluation at iteration 0 is excluded) and the image tensor it updates
  is kept, so the final synthetic set can be saved and evaluated by ddistill's evaluator.

The official loop performs ``Iteration + 1`` image updates; ``--iterations N`` passes ``Iteration = N - 1``
so that both codes take exactly N steps. Prints one line ``OFFICIAL_RESULT {json}``.

    python benchmarks/official/datadam_runner.py --official-dir /path/to/DataDAM --iterations 8 --batch-real 64
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
import types

import numpy as np
import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--official-dir", required=True, help="folder holding main_DataDAM.py, utils.py, networks.py")
    p.add_argument("--data", default="../shared/data/cifar10-jpg.tar.gz")
    p.add_argument("--ipc", type=int, default=10)
    p.add_argument("--iterations", type=int, default=8)
    p.add_argument("--batch-real", type=int, default=64)
    p.add_argument("--save-images", default=None, help="write the final synthetic images/labels here (.pt)")
    args = p.parse_args()

    import scipy.ndimage
    import torchvision.datasets as tvd

    from ddistill.data import get_dataset

    # The official utils import scipy.ndimage.interpolation, a module SciPy has since removed (same functions).
    sys.modules.setdefault("scipy.ndimage.interpolation", scipy.ndimage)
    data_root = args.data

    class MirrorCIFAR10(torch.utils.data.Dataset):
        """CIFAR-10 JPEG mirror behind torchvision CIFAR10's interface."""

        def __init__(self, root, train=True, download=False, transform=None):
            d = get_dataset("imagefolder", root=data_root, split="train" if train else "test")
            self.data = d.x.permute(0, 2, 3, 1).numpy()
            self.targets = d.y.tolist()
            self.classes = list(d.info.class_names)
            self.transform = transform

        def __len__(self):
            return len(self.targets)

        def __getitem__(self, i):
            from PIL import Image

            img = Image.fromarray(self.data[i])
            return (self.transform(img) if self.transform else img), self.targets[i]

    tvd.CIFAR10 = MirrorCIFAR10
    torch.nn.Module.cuda = lambda self, device=None: self

    stamps: list[float] = []
    state = types.SimpleNamespace(images=None)
    orig_step = torch.optim.SGD.step

    def timed_step(self, *a, **k):
        out = orig_step(self, *a, **k)
        params = self.param_groups[0]["params"]
        if len(params) == 1 and params[0].dim() == 4:  # the synthetic-image optimiser (one 4-D tensor)
            stamps.append(time.perf_counter())
            state.images = params[0]
        return out

    torch.optim.SGD.step = timed_step
    sys.path.insert(0, args.official_dir)
    import main_DataDAM

    with tempfile.TemporaryDirectory() as tmp:
        sys.argv = ["main_DataDAM.py", "--dataset", "CIFAR10", "--ipc", str(args.ipc),
                    "--Iteration", str(args.iterations - 1), "--batch_real", str(args.batch_real),
                    "--num_exp", "1", "--eval_mode", "SS", "--num_eval", "1", "--epoch_eval_train", "1",
                    "--data_path", tmp, "--save_path", tmp]
        t0 = time.perf_counter()
        main_DataDAM.main()
        wall = time.perf_counter() - t0
    d = np.diff(stamps)
    result = {"ipc": args.ipc, "batch_real": args.batch_real, "image_updates": len(stamps),
              "iterations_timed": len(d), "seconds_per_iteration_median": float(np.median(d)),
              "seconds_per_iteration": d.tolist(), "wall_seconds_total": wall,
              "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
              "argv": sys.argv[1:]}
    if args.save_images:
        k = 10
        labels = torch.arange(k).repeat_interleave(args.ipc)  # the official code lays classes out in blocks
        torch.save({"images": state.images.detach().cpu(), "labels": labels}, args.save_images)
        result["saved"] = args.save_images
    print("OFFICIAL_RESULT", json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
