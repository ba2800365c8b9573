"""TU graph-classification datasets (PyG ``TUDataset`` over the official zips), offline: the zip ``<root>/<NAME>.zip``
(or an extracted ``<root>/<NAME>/raw/<NAME>_A.txt`` ...) is unzipped into the cache and processed by PyG."""
from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import numpy as np

from .._cache import cache_dir
from .dataset import GRAPH_DATASETS, GraphDataset, GraphDatasetInfo, stratified_split

#: The fractions of the random stratified split of TU datasets (train, val, test).
TU_SPLIT = (0.8, 0.1, 0.1)
TU_URL = "https://www.chrsmrrs.com/graphkerneldatasets"

# --------------------------------------------------------------------------------------------
# TU datasets (PyG TUDataset over the official zips)
# --------------------------------------------------------------------------------------------
#: registry name -> (official TU name, default discretiser)
_TU = {
    "mutag": ("MUTAG", "onehot_argmax"),
    "ptc_mr": ("PTC_MR", "onehot_argmax"),
    "proteins": ("PROTEINS", "onehot_argmax"),
    "nci1": ("NCI1", "onehot_argmax"),
    "nci109": ("NCI109", "onehot_argmax"),
    "enzymes": ("ENZYMES", "onehot_argmax"),
    "imdb_binary": ("IMDB-BINARY", "degree"),
    "imdb_multi": ("IMDB-MULTI", "degree"),
}


def _stage_tu(tu_name: str, root: Path | None, download: bool) -> Path:
    """Puts the raw TU text files into ``<cache>/tu/<NAME>/raw/`` and returns ``<cache>/tu``."""
    base = cache_dir() / "tu"
    raw = base / tu_name / "raw"
    if (raw / f"{tu_name}_A.txt").is_file():
        return base
    if root is not None:
        zpath = root / f"{tu_name}.zip"
        extracted = root / tu_name / "raw"
        if zpath.is_file():
            raw.mkdir(parents=True, exist_ok=True)
            with zipfile.ZipFile(zpath) as zf:
                # The official zips hold "NAME//NAME_A.txt": keep only base names, as PyG's download() does.
                for member in zf.infolist():
                    fname = Path(member.filename).name
                    if member.is_dir() or not fname:
                        continue
                    with zf.open(member) as src, open(raw / fname, "wb") as dst:
                        shutil.copyfileobj(src, dst)
            return base
        if (extracted / f"{tu_name}_A.txt").is_file():
            shutil.copytree(extracted, raw, dirs_exist_ok=True)
            return base
    if download:
        return base  # TUDataset downloads into <base>/<NAME>/raw
    where = f"{root}/{tu_name}.zip or {root}/{tu_name}/raw/" if root is not None else "(no root given)"
    raise FileNotFoundError(
        f"TU dataset {tu_name} not found: expected {where} with {tu_name}_A.txt, {tu_name}_graph_indicator.txt, "
        f"{tu_name}_graph_labels.txt (and _node_labels / _edge_labels when the dataset has them). The official "
        f"zip is {TU_URL}/{tu_name}.zip; pass download=True to fetch it through PyG."
    )


def _load_tu(tu_name: str, disc: str, key: str, root: str | Path | None, split_seed: int,
             download: bool) -> GraphDataset:
    from torch_geometric.data import Data
    from torch_geometric.datasets import TUDataset

    base = _stage_tu(tu_name, Path(root) if root is not None else None, download)
    # use_node_attr=False keeps only the categorical node labels (one-hot): Mirage hashes discrete labels.
    ds = TUDataset(str(base), tu_name, use_node_attr=False, use_edge_attr=False)
    graphs = []
    for d in ds:
        g = Data(edge_index=d.edge_index, y=d.y.reshape(1).long(), num_nodes=int(d.num_nodes))
        if d.x is not None:
            g.x = d.x.float()
        if getattr(d, "edge_attr", None) is not None:
            g.edge_attr = d.edge_attr.float()
        graphs.append(g)
    y = np.array([int(g.y) for g in graphs])
    tr, va, te = stratified_split(y, TU_SPLIT, split_seed)
    first = graphs[0]
    nf = 0 if first.x is None else int(first.x.shape[1])
    ef = 0 if getattr(first, "edge_attr", None) is None else int(first.edge_attr.shape[1])
    info = GraphDatasetInfo(
        name=key, num_classes=int(y.max()) + 1, node_features="onehot" if nf else "none",
        edge_features="onehot" if ef else "none", num_node_features=nf, num_edge_features=ef, metric="accuracy",
        discretiser=disc, split=f"random stratified 80/10/10, numpy seed {split_seed}",
    )
    return GraphDataset([graphs[i] for i in tr], [graphs[i] for i in va], [graphs[i] for i in te], info)


def _register_tu(key: str, tu_name: str, disc: str) -> None:
    def loader(root: str | Path | None = None, split_seed: int = 0, download: bool = False) -> GraphDataset:
        return _load_tu(tu_name, disc, key, root, split_seed, download)

    loader.__doc__ = (f"TU dataset {tu_name} (PyG TUDataset over the official zip), random stratified 80/10/10 "
                      f"split; default Mirage discretiser '{disc}'.")
    GRAPH_DATASETS.register(key)(loader)


for _key, (_name, _disc) in _TU.items():
    _register_tu(_key, _name, _disc)


