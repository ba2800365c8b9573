"""Graph-classification datasets (TU and OGB / MoleculeNet molecules) and a packed many-graph container.

Every loader returns a :class:`GraphDataset`: train / val / test lists of ``torch_geometric.data.Data`` with
``x`` (node features, or None), ``edge_index`` (both directions of every undirected edge), ``edge_attr``
(or None) and ``y`` of shape (1,), plus a :class:`GraphDatasetInfo`. Splits follow the protocol of Mirage
(Gupta et al., ICLR 2024, and its official code): a random stratified 80/10/10 split for TU datasets and
the OGB scaffold split for molecules.

Nothing is downloaded unless ``download=True`` is passed. Offline, the loaders read

- TU: the official zip ``<root>/<NAME>.zip`` (or an extracted ``<root>/<NAME>/raw/<NAME>_A.txt`` ...); it is
  unzipped into the cache and processed by PyG's ``TUDataset``;
- OGB molecules: an OGB raw folder ``<root>/ogbg_<mol>/{raw,split}`` read with ``ogb.io.read_graph_raw``;
- MoleculeNet molecules: ``<root>/<mol>.csv`` (``smiles,<label>``) featurised with ``ogb.utils.smiles2graph``
  (RDKit) and split by Bemis-Murcko scaffold exactly as OGB did (checked against the official molbace split).

Heavy libraries (torch_geometric, ogb, rdkit) are imported inside functions so ``import ddistill`` never needs
them. :class:`GraphPack` holds many graphs as one set of tensors (PyG's ``Batch`` layout) so batches can be
cut out with a few vectorised index operations instead of collating Python objects every step.
"""
from __future__ import annotations

import shutil
import sys
import warnings
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..registry import Registry
from ..synset import atomic_torch_save
from ._cache import cache_dir, fingerprint

GRAPH_DATASETS = Registry("graph dataset")

#: The fractions of the random stratified split of TU datasets (train, val, test).
TU_SPLIT = (0.8, 0.1, 0.1)
TU_URL = "https://www.chrsmrrs.com/graphkerneldatasets"
_OGB_URL = "http://snap.stanford.edu/ogb/data/graphproppred/csv_mol_download"


# --------------------------------------------------------------------------------------------
# containers
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GraphDatasetInfo:
    """Static facts about a graph-classification dataset.

    Args:
        name: registry name (``mutag``, ``ogbg_molbace``, ...).
        num_classes: number of classes K.
        node_features: how ``x`` is encoded: ``"onehot"`` (float one-hot categorical labels, TU),
            ``"ogb_atom"`` (long 9-column OGB atom features) or ``"none"`` (no node features, e.g. IMDB).
        edge_features: ``"onehot"``, ``"ogb_bond"`` (long 3-column OGB bond features) or ``"none"``.
        num_node_features: width of ``x`` (0 when there is none).
        num_edge_features: width of ``edge_attr`` (0 when there is none).
        metric: the metric of the papers' tables: ``"accuracy"`` (TU) or ``"roc_auc"`` (OGB / MoleculeNet).
        discretiser: default Mirage label discretiser (see :mod:`ddistill.graph.trees`).
        split: human-readable description of how the split was made.
    """

    name: str
    num_classes: int
    node_features: str
    edge_features: str
    num_node_features: int
    num_edge_features: int
    metric: str
    discretiser: str
    split: str


@dataclass
class GraphDataset:
    """Train / val / test lists of PyG ``Data`` graphs (each with ``y`` of shape (1,), long) and their info."""

    train: list[Any]
    val: list[Any]
    test: list[Any]
    info: GraphDatasetInfo

    @property
    def num_classes(self) -> int:
        return self.info.num_classes

    def __repr__(self) -> str:
        return (f"GraphDataset({self.info.name!r}, train={len(self.train)}, val={len(self.val)}, "
                f"test={len(self.test)}, classes={self.info.num_classes}, metric={self.info.metric!r})")


@dataclass
class GraphPack:
    """Many graphs stored as one set of tensors, in PyG's ``Batch`` layout but without PyG.

    Node ``i`` of graph ``g`` is row ``ptr[g] + i``; the edges of graph ``g`` are columns
    ``edge_ptr[g]:edge_ptr[g+1]`` of ``edge_index``, which holds *global* node indices.

    Shape:
        x: (N, F) float or (N, K) long node features, or None (featureless graphs);
        edge_index: (2, E) long; edge_attr: (E, D) or None; ptr: (G+1,) long; edge_ptr: (G+1,) long;
        y: (G,) long; root_mask: (N,) bool or None (None: every node is a readout node, as for real graphs);
        weight: (G,) float or None (e.g. the support of a Mirage tree-set).
    """

    x: Tensor | None
    edge_index: Tensor
    ptr: Tensor
    edge_ptr: Tensor
    y: Tensor
    edge_attr: Tensor | None = None
    root_mask: Tensor | None = None
    weight: Tensor | None = None
    #: Further per-node / per-edge tensors carried through :meth:`select` (e.g. Mirage's discrete labels).
    node_data: dict[str, Tensor] = field(default_factory=dict)
    edge_data: dict[str, Tensor] = field(default_factory=dict)

    # -- construction ---------------------------------------------------------------------------------------
    @classmethod
    def from_data_list(cls, graphs: Sequence[Any]) -> "GraphPack":
        """Concatenates PyG-like ``Data`` objects (with ``x``, ``edge_index``, ``edge_attr``, ``y``, ``num_nodes``)."""
        if len(graphs) == 0:
            raise ValueError("cannot pack an empty list of graphs")
        num_nodes = torch.tensor([int(g.num_nodes) for g in graphs], dtype=torch.long)
        num_edges = torch.tensor([int(g.edge_index.shape[1]) for g in graphs], dtype=torch.long)
        ptr = torch.cat([torch.zeros(1, dtype=torch.long), num_nodes.cumsum(0)])
        edge_ptr = torch.cat([torch.zeros(1, dtype=torch.long), num_edges.cumsum(0)])
        shift = torch.repeat_interleave(ptr[:-1], num_edges)
        edge_index = torch.cat([g.edge_index.long() for g in graphs], dim=1) + shift
        has_x = [getattr(g, "x", None) is not None for g in graphs]
        if any(has_x) and not all(has_x):
            raise ValueError("some graphs have node features and some do not")
        x = torch.cat([g.x for g in graphs]) if all(has_x) else None
        has_e = [getattr(g, "edge_attr", None) is not None for g in graphs]
        edge_attr = None
        if any(has_e):
            if not all(has_e):
                raise ValueError("some graphs have edge features and some do not")
            edge_attr = torch.cat([g.edge_attr for g in graphs])
        y = torch.cat([torch.as_tensor(g.y).reshape(-1)[:1] for g in graphs]).long()
        return cls(x, edge_index, ptr, edge_ptr, y, edge_attr)

    # -- views ----------------------------------------------------------------------------------------------
    @property
    def num_graphs(self) -> int:
        return int(self.ptr.numel() - 1)

    @property
    def num_nodes(self) -> int:
        return int(self.ptr[-1])

    @property
    def num_edges(self) -> int:
        return int(self.edge_ptr[-1])

    def __len__(self) -> int:
        return self.num_graphs

    def batch(self) -> Tensor:
        """(N,) graph index of every node."""
        counts = self.ptr[1:] - self.ptr[:-1]
        return torch.repeat_interleave(torch.arange(self.num_graphs, device=self.ptr.device), counts)

    def edge_batch(self) -> Tensor:
        """(E,) graph index of every edge."""
        counts = self.edge_ptr[1:] - self.edge_ptr[:-1]
        return torch.repeat_interleave(torch.arange(self.num_graphs, device=self.ptr.device), counts)

    def select(self, index: Tensor | Sequence[int]) -> "GraphPack":
        """The graphs ``index`` (in that order, repeats allowed) as a new pack; vectorised, no Python loop.

        Shape: index (B,) long -> a pack of B graphs.
        """
        dev = self.ptr.device
        index = torch.as_tensor(index, dtype=torch.long, device=dev).reshape(-1)
        counts = self.ptr[index + 1] - self.ptr[index]
        new_ptr = torch.cat([torch.zeros(1, dtype=torch.long, device=dev), counts.cumsum(0)])
        node_idx = _ranges(self.ptr[index], counts, new_ptr)
        ecounts = self.edge_ptr[index + 1] - self.edge_ptr[index]
        new_eptr = torch.cat([torch.zeros(1, dtype=torch.long, device=dev), ecounts.cumsum(0)])
        edge_idx = _ranges(self.edge_ptr[index], ecounts, new_eptr)
        # An edge keeps its offset inside its graph: global index - old graph start + new graph start.
        shift = torch.repeat_interleave(new_ptr[:-1] - self.ptr[index], ecounts)
        return GraphPack(
            x=None if self.x is None else self.x[node_idx],
            edge_index=self.edge_index[:, edge_idx] + shift,
            ptr=new_ptr,
            edge_ptr=new_eptr,
            y=self.y[index],
            edge_attr=None if self.edge_attr is None else self.edge_attr[edge_idx],
            root_mask=None if self.root_mask is None else self.root_mask[node_idx],
            weight=None if self.weight is None else self.weight[index],
            node_data={k: v[node_idx] for k, v in self.node_data.items()},
            edge_data={k: v[edge_idx] for k, v in self.edge_data.items()},
        )

    def to(self, device: torch.device | str) -> "GraphPack":
        def mv(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device)

        return GraphPack(mv(self.x), self.edge_index.to(device), self.ptr.to(device), self.edge_ptr.to(device),
                         self.y.to(device), mv(self.edge_attr), mv(self.root_mask), mv(self.weight),
                         {k: v.to(device) for k, v in self.node_data.items()},
                         {k: v.to(device) for k, v in self.edge_data.items()})

    def with_features(self, x: Tensor | None, edge_attr: Tensor | None) -> "GraphPack":
        """The same graphs with other node / edge features (e.g. a model's input encoding)."""
        return replace(self, x=x, edge_attr=edge_attr)

    # -- SyntheticSet interop -------------------------------------------------------------------------------
    _FIELDS = ("x", "edge_index", "ptr", "edge_ptr", "y", "edge_attr", "root_mask", "weight")

    def to_tensors(self) -> dict[str, Tensor]:
        """PyG field names (plus ``ptr``/``edge_ptr``/``root_mask``/``weight``) for a :class:`SyntheticSet`."""
        out = {k: getattr(self, k) for k in self._FIELDS if getattr(self, k) is not None}
        clash = (set(self.node_data) | set(self.edge_data)) & set(self._FIELDS)
        if clash:
            raise ValueError(f"node/edge data keys {sorted(clash)} clash with the pack's own fields")
        out.update(self.node_data)
        out.update(self.edge_data)
        return out

    @classmethod
    def from_tensors(cls, tensors: dict[str, Tensor], node_keys: Sequence[str] = (),
                     edge_keys: Sequence[str] = ()) -> "GraphPack":
        """Inverse of :meth:`to_tensors`; ``node_keys`` / ``edge_keys`` name further tensors to carry along."""
        missing = [k for k in ("edge_index", "ptr", "edge_ptr", "y") if k not in tensors]
        if missing:
            raise ValueError(f"graph tensors lack {missing}; a graph set needs x, edge_index, ptr, edge_ptr and y "
                             f"(got {sorted(tensors)})")
        kw = {k: tensors.get(k) for k in cls._FIELDS}
        return cls(**kw, node_data={k: tensors[k] for k in node_keys if k in tensors},
                   edge_data={k: tensors[k] for k in edge_keys if k in tensors})

    def to_data_list(self) -> list[Any]:
        """PyG ``Data`` objects (for interoperability; training code uses the pack directly)."""
        from torch_geometric.data import Data

        out = []
        for g in range(self.num_graphs):
            n0, n1 = int(self.ptr[g]), int(self.ptr[g + 1])
            e0, e1 = int(self.edge_ptr[g]), int(self.edge_ptr[g + 1])
            d = Data(edge_index=self.edge_index[:, e0:e1] - n0, y=self.y[g:g + 1], num_nodes=n1 - n0)
            if self.x is not None:
                d.x = self.x[n0:n1]
            if self.edge_attr is not None:
                d.edge_attr = self.edge_attr[e0:e1]
            if self.root_mask is not None:
                d.root_mask = self.root_mask[n0:n1]
            out.append(d)
        return out


def _ranges(starts: Tensor, counts: Tensor, new_ptr: Tensor) -> Tensor:
    """Concatenation of ``arange(s, s + c)`` for every (s, c), vectorised.

    Shape: starts, counts (B,) -> (sum(counts),).
    """
    total = int(new_ptr[-1])
    offset_in_range = torch.arange(total, device=starts.device) - torch.repeat_interleave(new_ptr[:-1], counts)
    return torch.repeat_interleave(starts, counts) + offset_in_range


def graph_bytes(num_nodes: int, num_undirected_edges: int) -> int:
    """Bytes of a labelled graph in the library's plain graph encoding (int32 throughout).

    Per graph: class and node count (2 ints), one label per node, and (u, v, edge label) per undirected edge:
    ``4 * (2 + n + 3 m)``. Used for the full dataset and the ``random_graphs`` baseline so their sizes compare
    with Mirage's canonical tree-set bytes (:func:`ddistill.graph.trees.tree_set_bytes`), which use the same unit.
    """
    return 4 * (2 + int(num_nodes) + 3 * int(num_undirected_edges))


def pack_graph_bytes(pack: GraphPack) -> list[int]:
    """:func:`graph_bytes` of every graph of a pack (undirected edges counted once, self-loops dropped)."""
    src, dst = pack.edge_index
    keep = src < dst  # each undirected edge appears in both directions; count one of them
    und = torch.bincount(pack.edge_batch()[keep], minlength=pack.num_graphs)
    nodes = pack.ptr[1:] - pack.ptr[:-1]
    return [graph_bytes(n, m) for n, m in zip(nodes.tolist(), und.tolist())]


# --------------------------------------------------------------------------------------------
# public entry point
# --------------------------------------------------------------------------------------------
def load_graph_dataset(name: str, root: str | Path | None = None, *, split_seed: int = 0,
                       download: bool = False) -> GraphDataset:
    """Loads a registered graph-classification dataset with its train / val / test split.

    Args:
        name: registry name (see :func:`list_graph_datasets`); unknown names raise a KeyError listing the choices.
        root: folder holding the staged files (``<NAME>.zip`` for TU, ``ogbg_<mol>/`` or ``<mol>.csv`` for
            molecules). None: only the cache (and ``download``).
        split_seed: seed of the random stratified TU split (molecules use the deterministic scaffold split).
        download: fetch missing files from the official source (PyG / OGB servers). Off by default.
    """
    return GRAPH_DATASETS.get(name)(root=root, split_seed=split_seed, download=download)


def list_graph_datasets() -> list[str]:
    return GRAPH_DATASETS.names()


def stratified_split(y: np.ndarray, fractions: tuple[float, float, float], seed: int
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random stratified split: within every class, a ``numpy.random.Generator(seed)`` permutation is cut into
    val / test (``round(frac * n_c)`` each) and train (the rest). Each part is returned sorted.

    Shape: y (G,) int -> three index arrays.
    """
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[], [], []]
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_val = int(round(fractions[1] * len(idx)))
        n_test = int(round(fractions[2] * len(idx)))
        parts[1].append(idx[:n_val])
        parts[2].append(idx[n_val:n_val + n_test])
        parts[0].append(idx[n_val + n_test:])
    return tuple(np.sort(np.concatenate(p)) for p in parts)  # type: ignore[return-value]


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
        blob = torch.load(cached, map_location="cpu", weights_only=True)
        pack = GraphPack.from_tensors(blob["pack"])
        return pack.to_data_list(), {k: v.numpy() for k, v in blob["split"].items()}
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
    for row, (s, label) in enumerate(tqdm(zip(smiles, df[label_col].tolist()), total=len(df),
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


def _load_molecules(key: str, root: str | Path | None, split_seed: int, download: bool) -> GraphDataset:
    del split_seed  # the scaffold split is deterministic
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
    def loader(root: str | Path | None = None, split_seed: int = 0, download: bool = False) -> GraphDataset:
        return _load_molecules(key, root, split_seed, download)

    loader.__doc__ = (f"{key.replace('_', '-')}: OGB raw folder (official scaffold split) or MoleculeNet CSV "
                      f"(smiles2graph + computed scaffold split); ROC-AUC.")
    GRAPH_DATASETS.register(key)(loader)


for _key in _MOLECULES:
    _register_molecule(_key)


__all__ = [
    "GRAPH_DATASETS", "GraphDataset", "GraphDatasetInfo", "GraphPack", "graph_bytes", "import_ogb",
    "list_graph_datasets", "load_graph_dataset", "pack_graph_bytes", "scaffold_split", "stratified_split",
]
