"""Molecule datasets (ogbg-molhiv / -molbace / -molbbbp), offline: an OGB raw folder ``<root>/ogbg_<mol>/{raw,split}``
read with ``ogb.io.read_graph_raw``, or a MoleculeNet CSV ``<root>/<mol>.csv`` (``smiles,<label>``) featurised with
``ogb.utils.smiles2graph`` (RDKit) and split by Bemis-Murcko scaffold exactly as OGB did (checked against the
official molbace split). ogb and RDKit are imported inside functions."""
from __future__ import annotations

import shutil
import sys
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ...utils.progress import progress_bar
from ...io import atomic_torch_save
from .._cache import cache_dir, fingerprint
from .dataset import GRAPH_DATASETS, GraphDataset, GraphDatasetInfo
from .pack import GraphPack

_OGB_URL = "http://snap.stanford.edu/ogb/data/graphproppred/csv_mol_download"

# --------------------------------------------------------------------------------------------
# molecules: OGB raw folders and MoleculeNet CSVs
# --------------------------------------------------------------------------------------------
#: registry name -> (MoleculeNet csv stem == OGB download name, label column)
_MOLECULES = {"ogbg_molhiv": ("hiv", "hiv"), "ogbg_molbace": ("bace", "bace"), "ogbg_molbbbp": ("bbbp", "bbbp")}

_MISSING = object()
_MOLECULE_CACHE_VERSION = 1


def import_ogb() -> Any:
    """Imports ``ogb`` without its import-time version check.

    ``ogb/version.py`` starts a thread that asks PyPI for the latest version whenever ``ogb`` is imported; a
    library must not make network requests on import, so ``outdated`` is hidden while ``ogb`` loads (its
    ``ImportError`` fallback then skips the check).
    """
    if "ogb" in sys.modules:
        return sys.modules["ogb"]
    saved = sys.modules.get("outdated", _MISSING)
    sys.modules["outdated"] = None  # type: ignore[assignment]  # makes `from outdated import ...` raise ImportError
    try:
        import ogb
    finally:
        if saved is _MISSING:
            del sys.modules["outdated"]
        else:
            sys.modules["outdated"] = saved  # type: ignore[assignment]
    return ogb


def _find_ogb_folder(root: Path | None, key: str) -> Path | None:
    """An OGB dataset folder (with ``raw/edge.csv.gz``) at ``root``, ``root/<key>`` or ``root/<ogb-name>``."""
    if root is None:
        return None
    for cand in (root, root / key, root / key.replace("_", "-")):
        if (cand / "raw" / "edge.csv.gz").is_file():
            return cand
    return None


def _ogb_download(key: str) -> Path:
    """Fetches OGB's raw zip of ``key`` into the cache (only with ``download=True``)."""
    import_ogb()
    import pandas as pd
    from ogb.utils.url import download_url, extract_zip
    import ogb.graphproppred as gp

    master = pd.read_csv(Path(gp.__file__).parent / "master.csv", index_col=0, keep_default_na=False)
    url = master[key.replace("_", "-")]["url"]
    target = cache_dir() / "ogb"
    target.mkdir(parents=True, exist_ok=True)
    path = download_url(url, str(target))
    extract_zip(path, str(target))
    extracted = target / master[key.replace("_", "-")]["download_name"]
    final = target / key
    if final.exists():
        shutil.rmtree(final)
    extracted.rename(final)
    return final


def _read_ogb_folder(folder: Path) -> tuple[list[Any], dict[str, np.ndarray]]:
    """Graphs and official split of an OGB raw folder (``raw/*.csv.gz`` + ``split/scaffold/*.csv.gz``)."""
    import_ogb()
    import pandas as pd
    from ogb.io.read_graph_raw import read_csv_graph_raw
    from torch_geometric.data import Data

    raw = folder / "raw"
    dicts = read_csv_graph_raw(str(raw), add_inverse_edge=True)
    labels = pd.read_csv(raw / "graph-label.csv.gz", compression="gzip", header=None).values
    if np.isnan(labels.astype(float)).any():
        raise ValueError(f"{raw}/graph-label.csv.gz has missing labels; only single-task binary datasets are supported")
    graphs = [
        Data(x=torch.from_numpy(g["node_feat"]).long(), edge_index=torch.from_numpy(g["edge_index"]).long(),
             edge_attr=torch.from_numpy(g["edge_feat"]).long(), y=torch.tensor([int(labels[i, 0])]),
             num_nodes=int(g["num_nodes"]))
        for i, g in enumerate(dicts)
    ]
    split_dir = folder / "split" / "scaffold"
    split = {}
    for part in ("train", "valid", "test"):
        f = split_dir / f"{part}.csv.gz"
        if not f.is_file():
            raise FileNotFoundError(f"{folder} has no official split file {f}")
        split[part] = np.sort(pd.read_csv(f, compression="gzip", header=None).values[:, 0].astype(np.int64))
    return graphs, split


def scaffold_split(smiles: Sequence[str], fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Deterministic Bemis-Murcko scaffold split, as used to make OGB's molecule splits.

    Molecules are grouped by their chiral Murcko scaffold SMILES; groups are ordered by size (largest first,
    ties broken by their largest index, larger first) and assigned greedily: to train while it stays within
    ``fractions[0] * n``, else to val while train + val stays within ``(fractions[0] + fractions[1]) * n``, else
    to test. Reproduces ``ogbg-molbace``'s official split from the MoleculeNet CSV exactly (see the tests).

    Shape: smiles (G,) -> three sorted index arrays.
    """
    from rdkit import Chem, RDLogger
    from rdkit.Chem.Scaffolds import MurckoScaffold

    RDLogger.DisableLog("rdApp.*")
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(smiles):
        mol = Chem.MolFromSmiles(s)
        key = MurckoScaffold.MurckoScaffoldSmiles(mol=mol, includeChirality=True) if mol is not None else s
        groups.setdefault(key, []).append(i)
    ordered = sorted(groups.values(), key=lambda g: (len(g), g[-1]), reverse=True)
    n = len(smiles)
    train_cut, val_cut = fractions[0] * n, (fractions[0] + fractions[1]) * n
    tr: list[int] = []
    va: list[int] = []
    te: list[int] = []
    for g in ordered:
        if len(tr) + len(g) <= train_cut:
            tr.extend(g)
        elif len(tr) + len(va) + len(g) <= val_cut:
            va.extend(g)
        else:
            te.extend(g)
    return np.sort(np.array(tr, dtype=np.int64)), np.sort(np.array(va, dtype=np.int64)), np.sort(
        np.array(te, dtype=np.int64))


def _read_moleculenet_csv(csv: Path, label_col: str) -> tuple[list[Any], dict[str, np.ndarray]]:
    """Featurises a MoleculeNet CSV with OGB's ``smiles2graph`` and computes the scaffold split; cached."""
    import rdkit

    stat = csv.stat()
    # RDKit's version is part of the key: atom features and parse failures change between releases.
    key = fingerprint(csv.resolve(), stat.st_size, stat.st_mtime_ns, rdkit.__version__, _MOLECULE_CACHE_VERSION)
    cached = cache_dir() / "graphs" / f"{csv.stem}-{key}.pt"
    if cached.is_file():
        try:  # weights_only: a planted pickle runs nothing; an unreadable or damaged cache is rebuilt below
            blob = torch.load(cached, map_location="cpu", weights_only=True)
            graphs = GraphPack.from_tensors(blob["pack"]).to_data_list()
            split = {k: blob["split"][k].numpy() for k in ("train", "valid", "test")}
            if all(int(idx.max(initial=-1)) < len(graphs) for idx in split.values()):
                return graphs, split
        except Exception:  # noqa: BLE001
            pass
    import pandas as pd
    from rdkit import Chem, RDLogger

    import_ogb()
    from ogb.utils import smiles2graph
    from torch_geometric.data import Data

    RDLogger.DisableLog("rdApp.*")
    df = pd.read_csv(csv)
    if "smiles" not in df.columns or label_col not in df.columns:
        raise ValueError(f"{csv} must have columns 'smiles' and '{label_col}', found {list(df.columns)}")
    graphs, kept_rows, dropped = [], [], []
    smiles = df["smiles"].tolist()
    for row, (s, label) in enumerate(progress_bar(zip(smiles, df[label_col].tolist()), total=len(df),
                                          desc=f"featurise {csv.name}", mininterval=2.0)):
        if Chem.MolFromSmiles(s) is None:  # RDKit versions differ on a few exotic valences
            dropped.append(s)
            continue
        g = smiles2graph(s)
        graphs.append(Data(x=torch.from_numpy(g["node_feat"]).long(),
                           edge_index=torch.from_numpy(g["edge_index"]).long(),
                           edge_attr=torch.from_numpy(g["edge_feat"]).long(), y=torch.tensor([int(label)]),
                           num_nodes=int(g["num_nodes"])))
        kept_rows.append(row)
    if dropped:
        warnings.warn(f"{csv.name}: this RDKit cannot parse {len(dropped)} of {len(df)} SMILES (e.g. {dropped[0]!r}); "
                      f"they are left out of the graphs (the split is still computed over all rows, as OGB did)")
    # Split over every row so that the parsed molecules get the assignment OGB's procedure gives them.
    position = {row: k for k, row in enumerate(kept_rows)}
    split = {part: np.array([position[r] for r in idx.tolist() if r in position], dtype=np.int64)
             for part, idx in zip(("train", "valid", "test"), scaffold_split(smiles))}
    atomic_torch_save({"pack": GraphPack.from_data_list(graphs).to_tensors(),
                       "split": {k: torch.from_numpy(v) for k, v in split.items()}}, cached)
    return graphs, split


#: The split protocols a molecule dataset accepts: both name OGB's scaffold split, also the official Mirage one.
MOLECULE_SPLITS = ("scaffold", "official")


def _load_molecules(key: str, root: str | Path | None, split_seed: int, download: bool,
                    split_protocol: str | None = None) -> GraphDataset:
    del split_seed  # the scaffold split is deterministic
    if split_protocol is not None and str(split_protocol).lower() not in MOLECULE_SPLITS:
        raise ValueError(f"dataset split_protocol {split_protocol!r} is not available for {key}; choose from "
                         f"{list(MOLECULE_SPLITS)} (OGB's scaffold split, which the official Mirage code uses)")
    stem, label_col = _MOLECULES[key]
    rootp = Path(root) if root is not None else None
    folder = _find_ogb_folder(rootp, key) or _find_ogb_folder(cache_dir() / "ogb", key)
    csv = None
    if rootp is not None:
        for cand in (rootp / f"{stem}.csv", rootp / "moleculenet" / f"{stem}.csv"):
            if cand.is_file():
                csv = cand
                break
    if folder is not None:
        graphs, split = _read_ogb_folder(folder)
        how = f"official OGB scaffold split ({folder})"
    elif csv is not None:
        graphs, split = _read_moleculenet_csv(csv, label_col)
        how = f"scaffold split computed from {csv.name} (OGB's procedure)"
    elif download:
        folder = _ogb_download(key)
        graphs, split = _read_ogb_folder(folder)
        how = "official OGB scaffold split (downloaded)"
    else:
        where = str(rootp) if rootp is not None else "<root> (no root given)"
        ogb_name = key.replace("_", "-")
        raise FileNotFoundError(
            f"{key} not found: expected either the OGB raw folder {where}/{key}/ with raw/{{edge,edge-feat,node-feat,"
            f"num-node-list,num-edge-list,graph-label}}.csv.gz and split/scaffold/{{train,valid,test}}.csv.gz (OGB's "
            f"{ogb_name} download, {_OGB_URL}/{stem}.zip), or the MoleculeNet CSV {where}/{stem}.csv with columns "
            f"smiles,{label_col} (MoleculeNet / DeepChem, Wu et al. 2018). Pass download=True to fetch OGB's files."
        )
    info = GraphDatasetInfo(
        name=key, num_classes=2, node_features="ogb_atom", edge_features="ogb_bond", num_node_features=9,
        num_edge_features=3, metric="roc_auc", discretiser="ogb_atom_tuple", split=how,
    )
    def pick(idx: np.ndarray) -> list[Any]:
        return [graphs[i] for i in idx.tolist()]

    return GraphDataset(pick(split["train"]), pick(split["valid"]), pick(split["test"]), info)


def _register_molecule(key: str) -> None:
    def loader(root: str | Path | None = None, split_seed: int = 0, download: bool = False,
               split_protocol: str | None = None) -> GraphDataset:
        return _load_molecules(key, root, split_seed, download, split_protocol)

    loader.__doc__ = (f"{key.replace('_', '-')}: OGB raw folder (official scaffold split) or MoleculeNet CSV "
                      f"(smiles2graph + computed scaffold split); ROC-AUC.")
    GRAPH_DATASETS.register(key)(loader)


for _key in _MOLECULES:
    _register_molecule(_key)


