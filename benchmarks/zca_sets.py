"""Commit a ZCA-whitened set without its whitening matrix, and get the whole set back by fitting it again.

Why: a trajectory-matching set of CIFAR-10 is 0.1-1.2 MB of images but carries the 3072 x 3072 ZCA matrix (38 MB),
so those sets lived in the ignored ``runs/`` folder and were lost with three machines. The matrix is not free
information: ddistill fits it on the whole training split (``load_real(..., zca=True)``, kornia's estimator, eps
0.1). A stripped file keeps the images, labels, learned rate and ZCA mean, drops ``zca_w``, and records how it was
fitted (dataset, eps, torch thread count) with the sha256 of the dropped matrix. :func:`restore` fits it again and
attaches it only when the sha256 matches, so an evaluation never runs on a whitening other than the set's own.

The fit's last bits depend on the torch thread count (recorded; restore uses it) and may depend on the CPU's BLAS:
a mismatch is one line naming both digests, never a silent approximation. ``evaluation_cifar10.py
--accept-zca-refit`` scores such a set with this machine's fit instead, and records the mismatch in every cell it
scores that way. ::

    python benchmarks/zca_sets.py strip runs/mtt10k_r3/sets/mtt_mtt_ipc1.pt \\
        benchmarks/results/sets/mtt_mtt_r3_cifar10_ipc1.pt
    python benchmarks/zca_sets.py restore benchmarks/results/sets/mtt_mtt_r3_cifar10_ipc1.pt runs/mtt_r3_ipc1.pt \\
        --root ../shared/data/cifar10-jpg.tar.gz
"""
from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

#: meta key of a stripped set: how its ZCA matrix was fitted and the sha256 it must have again.
REFIT_KEY = "zca_refit"


def tensor_digest(t) -> str:
    """sha256 of a tensor's dtype, shape and bytes (a refit must match all three)."""
    h = hashlib.sha256(f"{t.dtype}{tuple(t.shape)}".encode())
    h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def strip(synset, *, threads: int = 1):
    """The set without ``zca_w``, recording the fit to repeat (``threads``: the torch thread count the set's data
    was loaded with; ``benchmarks/mtt_cifar10.py``: 1)."""
    from ddistill.synset import SyntheticSet

    enc = synset.meta.get("encoding") or {}
    if not enc.get("zca") or "zca_w" not in synset.tensors:
        raise SystemExit("the set is not ZCA-whitened (meta['encoding']['zca'] with a zca_w tensor): nothing to strip")
    data = synset.meta.get("data") or {}
    refit = {"dataset": data.get("name", synset.meta["dataset"]), "zca_eps": enc.get("zca_eps"),
             "kwargs": data.get("kwargs") or {}, "threads": threads,
             "zca_w_sha256": tensor_digest(synset.tensors["zca_w"]),
             "how": "ddistill.data.load_real(dataset, root=..., zca=True, zca_eps=zca_eps, **kwargs) at "
                    "torch.set_num_threads(threads); attach encoding.zca.w as zca_w"}
    tensors = {k: v for k, v in synset.tensors.items() if k != "zca_w"}
    return SyntheticSet(tensors, {**synset.meta, REFIT_KEY: refit})


def restore(synset, root: str | None, *, accept_other_bits: bool = False):
    """The whole set from a stripped one: fits the ZCA as recorded and attaches it when its sha256 matches.
    Sets that were not stripped are returned unchanged.

    ``accept_other_bits``: on another CPU type the fit can differ in its last bits (another BLAS summation order);
    then attach this machine's fit anyway, but only with its mismatch recorded in ``meta["zca_refit_mismatch"]`` so
    every score made with it says so. Off by default: a mismatch is refused."""
    import torch

    from ddistill.data import load_real
    from ddistill.synset import SyntheticSet

    refit = synset.meta.get(REFIT_KEY)
    if refit is None:
        return synset
    threads = torch.get_num_threads()
    torch.set_num_threads(int(refit["threads"]))
    try:
        real, _ = load_real(refit["dataset"], root=root, zca=True, zca_eps=refit["zca_eps"], **refit["kwargs"])
    finally:
        torch.set_num_threads(threads)
    zca = real.encoding.zca
    got = tensor_digest(zca.w)
    mismatch = None
    if got != refit["zca_w_sha256"]:
        if not accept_other_bits:
            raise SystemExit(f"the ZCA fitted here (sha256 {got[:12]}) is not the set's "
                             f"({refit['zca_w_sha256'][:12]}): the fit's last bits differ on this machine; re-make "
                             f"the set here or restore it on the machine type that made it")
        from ddistill.io import machine_info

        mismatch = {"set_zca_w_sha256": refit["zca_w_sha256"], "refit_zca_w_sha256": got,
                    "refit_cpu": machine_info().get("cpu"),
                    "what": "the set's own ZCA matrix was not reproduced bit for bit here; its images were whitened "
                            "by that matrix, the real data of this score by the refit"}
    if not torch.equal(zca.mean, synset.tensors["zca_mean"]):
        raise SystemExit("the ZCA mean fitted here differs from the set's zca_mean: another dataset or root?")
    meta = {k: v for k, v in synset.meta.items() if k != REFIT_KEY}
    if mismatch is not None:
        meta["zca_refit_mismatch"] = mismatch
    return SyntheticSet({**synset.tensors, "zca_w": zca.w}, meta)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("action", choices=["strip", "restore"])
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--threads", type=int, default=1, help="strip: the thread count the set's data was loaded with")
    p.add_argument("--root", default="../shared/data/cifar10-jpg.tar.gz", help="restore: the dataset's files")
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    from ddistill.synset import SyntheticSet, SyntheticSetError

    if Path(args.dst).exists() and not args.overwrite:
        raise SystemExit(f"{args.dst} exists; pass --overwrite to replace it")
    try:
        synset = SyntheticSet.load(args.src)
    except (SyntheticSetError, FileNotFoundError) as e:
        raise SystemExit(f"{args.src}: {e}") from None
    out = strip(synset, threads=args.threads) if args.action == "strip" else restore(synset, args.root)
    out.save(args.dst)
    print(f"wrote {args.dst} ({Path(args.dst).stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
