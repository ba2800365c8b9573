"""TU graph-classification datasets over the official zips, offline: the zip ``<root>/<NAME>.zip`` is unzipped into the
cache (atomically, verified), or an extracted ``<root>/<NAME>/raw/<NAME>_A.txt`` ... is read in place; the text
files are parsed with PyG's ``read_tu_data`` on every load (no pickled cache that could execute code)."""
from __future__ import annotations

import json
import shutil
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from .._cache import build_once, cache_dir
from .dataset import GRAPH_DATASETS, GRAPH_SPLITS, TU_FRACTIONS, GraphDataset, GraphDatasetInfo, resolve_split

#: The fractions of the random stratified split of TU datasets (train, val, test).
TU_SPLIT = TU_FRACTIONS
TU_URL = "https://www.chrsmrrs.com/graphkerneldatasets"

# --------------------------------------------------------------------------------------------
# TU datasets (the official zips, parsed by PyG's read_tu_data)
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


#: Raw files every TU dataset has (labels and attributes are optional).
_REQUIRED = ("A", "graph_indicator", "graph_labels")
_MARKER = ".complete.json"


def _extract_zip(zpath: Path, raw: Path, tu_name: str) -> None:
    """Unzips the official TU zip into ``raw`` atomically (:func:`~ddistill.data._cache.build_once`): files go to a
    temporary folder, are checked, and the folder is renamed into place with a marker listing every file and its
    size. An interrupted or corrupt extraction leaves nothing behind that a later run would trust; processes
    staging the same dataset take turns."""

    def extract(tmp: Path) -> None:
        try:
            with zipfile.ZipFile(zpath) as zf:
                # The official zips hold "NAME//NAME_A.txt": keep only base names, as PyG's download() does.
                for member in zf.infolist():
                    fname = Path(member.filename).name
                    if member.is_dir() or not fname:
                        continue
                    with zf.open(member) as src, open(tmp / fname, "wb") as dst:
                        shutil.copyfileobj(src, dst)
        except (zipfile.BadZipFile, EOFError, zlib.error) as e:
            raise ValueError(f"{zpath} is not a readable zip archive ({type(e).__name__}: {e}); replace it with "
                             f"the official {TU_URL}/{tu_name}.zip") from None
        _check_raw(tmp, tu_name, where=str(zpath))
        _write_marker(tmp)

    # A folder whose marker fails the check (an interrupted or damaged extraction) is rebuilt.
    build_once(raw, complete=_marker_ok, fill=extract)


def _check_raw(folder: Path, tu_name: str, *, where: str) -> None:
    missing = [f"{tu_name}_{n}.txt" for n in _REQUIRED if not (folder / f"{tu_name}_{n}.txt").is_file()]
    if missing:
        raise ValueError(f"{where} lacks {missing}: not the official {tu_name} data")


def _write_marker(folder: Path) -> None:
    files = {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.is_file() and p.name != _MARKER}
    (folder / _MARKER).write_text(json.dumps(files))


def _marker_ok(folder: Path) -> bool:
    """Whether ``folder`` holds a completed extraction whose files are all there with their recorded sizes."""
    try:
        files = json.loads((folder / _MARKER).read_text())
        return bool(files) and all((folder / n).is_file() and (folder / n).stat().st_size == size
                                   for n, size in files.items())
    except (OSError, ValueError):
        return False


def _stage_tu(tu_name: str, root: Path | None, download: bool) -> Path:
    """Puts the raw TU text files into ``<cache>/tu/<NAME>/raw/`` (verified, see :func:`_extract_zip`) and returns
    that folder. A cached folder with a missing marker or a file of the wrong size is rebuilt."""
    raw = cache_dir() / "tu" / tu_name / "raw"
    if _marker_ok(raw):
        return raw
    if root is not None:
        zpath = root / f"{tu_name}.zip"
        extracted = root / tu_name / "raw"
        if zpath.is_file():
            _extract_zip(zpath, raw, tu_name)
            return raw
        if (extracted / f"{tu_name}_A.txt").is_file():
            _check_raw(extracted, tu_name, where=str(extracted))
            return extracted  # read in place: nothing is written beside the user's files
    if download:
        from torch_geometric.data import download_url

        zpath = Path(download_url(f"{TU_URL}/{tu_name}.zip", str(cache_dir() / "tu" / "zips")))
        _extract_zip(zpath, raw, tu_name)
        return raw
    where = f"{root}/{tu_name}.zip or {root}/{tu_name}/raw/" if root is not None else "(no root given)"
    raise FileNotFoundError(
        f"TU dataset {tu_name} not found: expected {where} with {tu_name}_A.txt, {tu_name}_graph_indicator.txt, "
        f"{tu_name}_graph_labels.txt (and _node_labels / _edge_labels when the dataset has them). The official "
        f"zip is {TU_URL}/{tu_name}.zip; pass download=True to fetch it."
    )


def read_tu_graphs(raw: Path, tu_name: str) -> list[Any]:
    """The graphs of a TU dataset read straight from its raw text files with PyG's parser (``read_tu_data``), never
    through a pickled ``processed/`` cache: PyG reloads those as unrestricted pickles, so a file planted there
    would run code. Node / edge attributes are dropped and only the one-hot categorical labels kept (as
    ``TUDataset(use_node_attr=False, use_edge_attr=False)``): Mirage hashes discrete labels.

    Returns PyG ``Data`` objects with ``edge_index``, ``y`` (1,), ``num_nodes``, float ``x`` and ``edge_attr`` when
    the dataset has them.
    """
    from torch_geometric.data import Data
    from torch_geometric.io import read_tu_data

    try:
        data, slices, sizes = read_tu_data(str(raw), tu_name)
    except (OSError, ValueError, RuntimeError, IndexError) as e:
        raise ValueError(f"the TU files in {raw} cannot be parsed ({type(e).__name__}: {e}); they are damaged or "
                         f"incomplete: delete {raw} (a cached copy is rebuilt from the zip)") from None
    x = data.x[:, sizes["num_node_attributes"]:] if data.x is not None else None
    edge_attr = data.edge_attr[:, sizes["num_edge_attributes"]:] if data.edge_attr is not None else None
    edge_slice = slices["edge_index"]
    if x is not None:
        node_slice = slices["x"]
        counts = (node_slice[1:] - node_slice[:-1]).tolist()
    else:
        counts = list(data._num_nodes)
    graphs = []
    for g, n in enumerate(counts):
        e0, e1 = int(edge_slice[g]), int(edge_slice[g + 1])
        d = Data(edge_index=data.edge_index[:, e0:e1], y=data.y[g].reshape(1).long(), num_nodes=int(n))
        if x is not None:
            d.x = x[int(node_slice[g]) : int(node_slice[g + 1])].float()
        if edge_attr is not None:
            d.edge_attr = edge_attr[e0:e1].float()
        graphs.append(d)
    return graphs


#: How each TU split protocol is described in ``GraphDatasetInfo.split``.
_SPLIT_TEXT = {
    "stratified": "random stratified 80/10/10, numpy seed {seed}",
    "official": "official Mirage TU split: torch.randperm with seed {seed} (PyG shuffle), first 10% test, "
                "next 10% val, rest train",
}


def _load_tu(tu_name: str, disc: str, key: str, root: str | Path | None, split_seed: int,
             download: bool, split_protocol: str | None = None) -> GraphDataset:
    name = resolve_split(split_protocol)
    raw = _stage_tu(tu_name, Path(root) if root is not None else None, download)
    graphs = read_tu_graphs(raw, tu_name)
    y = np.array([int(g.y) for g in graphs])
    tr, va, te = GRAPH_SPLITS.get(name)(y, split_seed)
    first = graphs[0]
    nf = 0 if first.x is None else int(first.x.shape[1])
    ef = 0 if getattr(first, "edge_attr", None) is None else int(first.edge_attr.shape[1])
    info = GraphDatasetInfo(
        name=key, num_classes=int(y.max()) + 1, node_features="onehot" if nf else "none",
        edge_features="onehot" if ef else "none", num_node_features=nf, num_edge_features=ef, metric="accuracy",
        discretiser=disc, split=_SPLIT_TEXT[name].format(seed=split_seed),
    )
    return GraphDataset([graphs[i] for i in tr], [graphs[i] for i in va], [graphs[i] for i in te], info)


def _register_tu(key: str, tu_name: str, disc: str) -> None:
    def loader(root: str | Path | None = None, split_seed: int = 0, download: bool = False,
               split_protocol: str | None = None) -> GraphDataset:
        return _load_tu(tu_name, disc, key, root, split_seed, download, split_protocol)

    loader.__doc__ = (f"TU dataset {tu_name} (the official zip, PyG's parser), random stratified 80/10/10 "
                      f"split (or ``split_protocol='official'``); default Mirage discretiser '{disc}'.")
    GRAPH_DATASETS.register(key)(loader)


for _key, (_name, _disc) in _TU.items():
    _register_tu(_key, _name, _disc)


