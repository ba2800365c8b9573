"""Trajectory matching (MTT; Cazenavette et al., "Dataset Distillation by Matching Training Trajectories", CVPR 2022)
with the student-side improvements of AST (Shen, Yang & Lam, "AST: Effective Dataset Distillation through Alignment
with Smooth and High-Quality Expert Trajectories", arXiv 2310.10541).

Each iteration draws an expert trajectory {theta*_t} (see :mod:`synthesizers.mtt.experts`) and a start epoch
t < ``max_start_epoch``, starts a student at theta_0 = theta*_t and takes N = ``syn_steps`` SGD steps on
mini-batches of the DSA-augmented synthetic images with the learnable rate alpha (MTT Eq. 1)::

    theta_{n+1} = theta_n - alpha * grad_theta CE(f(A(x_syn_b); theta_n), y_b)

The loss (MTT Eq. 2) is the distance to the expert M = ``expert_epochs`` epochs later, normalised by how far the
expert itself moved::

    L = ||theta_N - theta*_{t+M}||^2 / ||theta*_t - theta*_{t+M}||^2

and is backpropagated through the whole unroll to the images and alpha. The student network is evaluated with
``torch.func.functional_call`` on views of one flat parameter vector (MTT's ``ReparamModule`` does the same by
hand), so the unroll is plain autograd.

AST switches (all off by default; ``<setting>_ast`` presets turn them on):

- ``init="representative"``: per class, k-means on an expert's logits of the real images; the images nearest to
  the centres initialise the class (AST's "representative initialisation", code ``--pix_init avg``).
- ``inner_momentum``: the student's SGD uses heavy-ball momentum v_{n+1} = mu v_n + g_n, v_1 = g_0 (AST 0.9).
- ``balanced_inner_loss``: the inner cross-entropy is scaled by log_5(|t - T/2| + 8): *multiplied* when
  t >= T/2 and *divided* when t < T/2, T = ``max_start_epoch`` (``distill.py --balance_loss``), so that early
  starts (large losses, large gradients) and late starts (small ones) move the student comparably.
- ``intermediate_matching``: weight w of extra terms matching the student after n_j = (N // M) * j steps to
  theta*_{t+j}, j = 1..M-1, each normalised like Eq. 2 (``--agg_middle_loss`` is w = 1).
- ``weight_perturbation``: alpha_p of the start perturbation w + alpha_p * (d / ||d||_F) * w on every conv weight,
  d ~ N(0, I) (``--weight_perturb``, alpha_p = 1).

``segments``: S trajectory segments per iteration (expert, start and plan drawn for each, in order), the loss being
their mean; S = 1 is MTT. Under ``torchrun`` each rank unrolls S / world_size of them and the gradients of the
images and of alpha are summed over the ranks, which equals one process running S segments.

``memory_saving=True`` computes the same gradient with memory that does not grow with the unroll's activations:
the forward pass keeps only the student parameters (and momentum) after every step, and the backward pass
recomputes one step at a time and backpropagates through it (gradient checkpointing with one step per segment);
see :class:`~synthesizers.mtt.unroll.TrajectoryUnroll`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from ddistill.augment import AUGMENTS, build_augment
from ddistill.data import RealData
from ddistill.models import ModelFamily
from ddistill.synset import SyntheticSet
from ddistill.utils.seed import derive_seed

from ..base import SYNTHESIZERS, GradientConfig, GradientSynthesizer
from .expert_file import ExpertBuffer, ExpertFileError, ParamLayout
from .unroll import InnerPlan, TrajectoryUnroll

#: ``derive_seed`` stream of the student architecture's (unused) initial weights.
STUDENT_STREAM = 21

#: What the squared-distance normaliser of Eq. 2 measures from (see MTTConfig.distance_from).
DISTANCE_REFERENCES = ("expert", "student_start")
INITS = ("real", "noise", "representative")


# ---------------------------------------------------------------------------------------------------------------
# Pieces of the method, as small pure functions
# ---------------------------------------------------------------------------------------------------------------
def balance_factor(start_epoch: int, max_start_epoch: int, *, base: float = 5.0, offset: float = 8.0) -> float:
    """AST's balanced inner-loop factor on the student's cross-entropy.

    f = log_base(|t - T/2| + offset) with T/2 = ``max_start_epoch // 2``; returns f for t >= T/2 and 1/f for
    t < T/2 (AST ``distill.py --balance_loss`` multiplies late starts and divides early ones).
    """
    half = max_start_epoch // 2
    f = math.log(abs(start_epoch - half) + offset, base)
    return f if start_epoch >= half else 1.0 / f


def perturb_conv_weights(theta: Tensor, layout: ParamLayout, alpha: float, generator: torch.Generator) -> Tensor:
    """AST's weight perturbation of a starting point: w + alpha * (d / ||d||_F) * w for each 4-D (conv) weight,
    d ~ N(0, I) drawn from ``generator``; other parameters are unchanged.

    Shape: theta (P,) -> (P,).
    """
    out = theta.clone()
    for _, sl, shape in layout.slices():
        if len(shape) != 4:
            continue
        d = torch.randn(sl.stop - sl.start, generator=generator, dtype=torch.float32).to(theta)
        w = theta[sl]
        out[sl] = w + alpha * (d / d.norm()) * w
    return out


def kmeans(points: Tensor, k: int, generator: torch.Generator, *, iterations: int = 100) -> Tensor:
    """Lloyd's k-means with k-means++ seeding drawn from ``generator`` (deterministic, float64).

    Shape: points (n, d) -> centres (k, d).
    """
    x = points.detach().double().cpu()
    n = x.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k-means needs 1 <= k <= {n} points, got k={k}")
    first = int(torch.randint(n, (1,), generator=generator))
    centres = [x[first]]
    d2 = ((x - centres[0]) ** 2).sum(1)
    for _ in range(1, k):
        probs = d2 / d2.sum() if d2.sum() > 0 else torch.full((n,), 1.0 / n, dtype=torch.float64)
        pick = int(torch.multinomial(probs, 1, generator=generator))
        centres.append(x[pick])
        d2 = torch.minimum(d2, ((x - x[pick]) ** 2).sum(1))
    c = torch.stack(centres)
    assign = None
    for _ in range(iterations):
        new = torch.cdist(x, c).argmin(1)
        if assign is not None and torch.equal(new, assign):
            break
        assign = new
        for j in range(k):
            members = x[assign == j]
            if len(members):  # an emptied cluster keeps its old centre
                c[j] = members.mean(0)
    return c


def representative_indices(features: Tensor, ipc: int, generator: torch.Generator, *, clusters: int = 10) -> Tensor:
    """AST's representative selection within one class: k-means with k = min(ipc, clusters, n) on ``features``
    (an expert's logits), then the images nearest to each centre, ipc // k per centre (the first ipc % k centres
    take one more), never the same image twice.

    AST's code uses 10 clusters and int(ipc / 10) images per centre, which selects nothing for ipc < 10 and too
    few when 10 does not divide ipc; taking k = min(ipc, clusters) keeps its intent for every ipc.

    Shape: features (n, d) -> indices (ipc,) into the rows of ``features``.
    """
    n = features.shape[0]
    if ipc > n:
        raise ValueError(f"cannot pick {ipc} representatives from {n} images")
    k = min(ipc, clusters, n)
    centres = kmeans(features, k, generator)
    x = features.detach().double().cpu()
    taken = torch.zeros(n, dtype=torch.bool)
    chosen = []
    for j in range(k):
        count = ipc // k + (1 if j < ipc % k else 0)
        dist = ((x - centres[j]) ** 2).sum(1)
        dist[taken] = float("inf")
        pick = torch.argsort(dist, stable=True)[:count]
        taken[pick] = True
        chosen.append(pick)
    return torch.cat(chosen)


def same_encoding(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two ``Encoding.to_meta()`` dicts describe the same inputs: exact flags and shape, mean/std up to
    float noise (they may be computed from the data on another machine)."""
    keys = ("shape", "normalize", "zca", "zca_eps")
    if any(a.get(k) != b.get(k) for k in keys):
        return False
    return all(len(a[k]) == len(b[k]) and all(math.isclose(u, v, rel_tol=1e-6, abs_tol=1e-9)
                                              for u, v in zip(a[k], b[k])) for k in ("mean", "std"))


# ---------------------------------------------------------------------------------------------------------------
# Config and presets
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class MTTConfig(GradientConfig):
    """MTT hyper-parameters (defaults: MTT's ``distill.py`` argparse; per-setting values in the presets).

    Args:
        preset: name of the preset these values came from, recorded in the set.
        experts: an expert file or a folder of them (``scripts/train_experts.py``); required.
        max_experts: use only experts with index < max_experts (None = all).
        syn_steps: N, student steps per iteration.
        expert_epochs: M, expert epochs the student must cover.
        max_start_epoch: the start epoch t is drawn from [0, max_start_epoch).
        lr_images: SGD learning rate of the images (MTT ``lr_img``).
        momentum: SGD momentum of the images (0.5).
        lr_lr: SGD learning rate of the learnable student rate alpha.
        lr_momentum: SGD momentum of alpha (0.5).
        lr_teacher: initial alpha (MTT ``lr_teacher``).
        batch_syn: synthetic images per student step; None = all.
        augment: "dsa" (per-sample DSA parameters in every student step, as MTT) or "none".
        dsa_strategy: None = the dataset's default strategy.
        init: "real", "noise" or "representative" (AST).
        representative_clusters: k-means clusters per class for ``init="representative"`` (AST 10; min(ipc, .)).
        inner_momentum: the student's SGD momentum (0 = MTT, 0.9 = AST).
        balanced_inner_loss: AST's log_5(|t - T/2| + 8) factor on the inner cross-entropy.
        intermediate_matching: weight of AST's intermediate matching terms (0 = off, AST 1).
        weight_perturbation: alpha_p of AST's conv-weight perturbation of the start (0 = off, AST 1).
        distance_from: the normaliser of Eq. 2 is ||theta*_t - theta*_{t+M}||^2 with theta*_t the expert's
            checkpoint ("expert", the papers' formula) or the student's perturbed start ("student_start", what
            AST's code does, since it overwrites its starting parameters with the perturbed ones). Only differs
            with ``weight_perturbation``.
        memory_saving: recompute the unroll step by step in the backward pass (same gradient, memory independent
            of syn_steps' activations).
        segments: trajectory segments per iteration, the loss being their mean (1 = MTT); under ``torchrun`` a
            multiple of the number of processes, each rank unrolling its share.
    """

    preset: str = "custom"
    iterations: int = 5000
    init: str = "real"
    experts: str = ""
    max_experts: int | None = None
    syn_steps: int = 20
    expert_epochs: int = 3
    max_start_epoch: int = 25
    lr_images: float = 1000.0
    momentum: float = 0.5
    lr_lr: float = 1e-5
    lr_momentum: float = 0.5
    lr_teacher: float = 0.01
    batch_syn: int | None = None
    augment: str = "dsa"
    dsa_strategy: str | None = None
    representative_clusters: int = 10
    inner_momentum: float = 0.0
    balanced_inner_loss: bool = False
    intermediate_matching: float = 0.0
    weight_perturbation: float = 0.0
    distance_from: str = "expert"
    memory_saving: bool = False
    segments: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.segments < 1:
            raise ValueError(f"segments must be >= 1, got {self.segments}")
        if self.init not in INITS:
            raise ValueError(f"unknown init '{self.init}'; choose from {list(INITS)}")
        if self.distance_from not in DISTANCE_REFERENCES:
            raise ValueError(f"unknown distance_from '{self.distance_from}'; choose from {list(DISTANCE_REFERENCES)}")
        for name in ("syn_steps", "expert_epochs", "max_start_epoch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_syn is not None and self.batch_syn < 1:
            raise ValueError(f"batch_syn must be >= 1 or null (all images), got {self.batch_syn}")
        AUGMENTS.get(self.augment)


#: DC-BENCH hyper-parameters provided by the MTT authors (methods.md table). ZCA is a data setting: the configs in
#: scripts/configs/mtt/ set ``dataset.zca`` and point ``experts`` at experts trained with the same encoding.
_TABLE: dict[str, dict[str, Any]] = {
    "cifar10_ipc1": dict(ipc=1, syn_steps=50, expert_epochs=2, max_start_epoch=2, lr_images=100.0, lr_lr=1e-7,
                         lr_teacher=0.01, batch_syn=None),
    "cifar10_ipc10": dict(ipc=10, syn_steps=30, expert_epochs=2, max_start_epoch=20, lr_images=100.0, lr_lr=1e-5,
                          lr_teacher=0.001, batch_syn=None),
    "cifar10_ipc50": dict(ipc=50, syn_steps=30, expert_epochs=2, max_start_epoch=40, lr_images=1000.0, lr_lr=1e-5,
                          lr_teacher=0.001, batch_syn=None),
    "cifar100_ipc1": dict(ipc=1, syn_steps=20, expert_epochs=3, max_start_epoch=20, lr_images=1000.0, lr_lr=1e-5,
                          lr_teacher=0.01, batch_syn=None),
    "cifar100_ipc10": dict(ipc=10, syn_steps=20, expert_epochs=2, max_start_epoch=20, lr_images=1000.0, lr_lr=1e-5,
                           lr_teacher=0.01, batch_syn=None),
    "cifar100_ipc50": dict(ipc=50, syn_steps=80, expert_epochs=2, max_start_epoch=40, lr_images=1000.0, lr_lr=1e-5,
                           lr_teacher=0.01, batch_syn=125),
    "tinyimagenet_ipc1": dict(ipc=1, syn_steps=10, expert_epochs=2, max_start_epoch=10, lr_images=10000.0,
                              lr_lr=1e-4, lr_teacher=0.01, batch_syn=None),
    "tinyimagenet_ipc10": dict(ipc=10, syn_steps=20, expert_epochs=2, max_start_epoch=40, lr_images=10000.0,
                               lr_lr=1e-4, lr_teacher=0.01, batch_syn=200),
}

#: AST's student-side switches on top of MTT's per-setting values (``<setting>_ast``): representative init
#: (``--pix_init avg``, used by its CIFAR-100 commands), weight perturbation, intermediate matching, balanced inner
#: loss, inner momentum 0.9 (its default). These presets keep MTT's learning rates; the ``<setting>_ast_official``
#: presets below use AST's own commands instead.
AST_SWITCHES: dict[str, Any] = dict(init="representative", inner_momentum=0.9, balanced_inner_loss=True,
                                    intermediate_matching=1.0, weight_perturbation=1.0)

#: AST's own commands (shenjiyuan123/AST-Alignment-with-Smooth-Expert ``distill.sh`` at 8030869; CIFAR-10 exists
#: only at IPC 10): no representative init for CIFAR-10 (``pix_init`` defaults to real), the normaliser of Eq. 2
#: measured from the perturbed start (its code overwrites the start with the perturbed parameters), student rate
#: initialised at 0.01; ``lr_img 100, lr_lr 1e-6`` (line 16, the smoothed-expert buffer; line 18 uses 1000 / 1e-5).
#: CIFAR-100 (lines 11 and 14): representative init, no ``--balance_loss``.
_AST_OFFICIAL: dict[str, dict[str, Any]] = {
    "cifar10_ipc10": dict(ipc=10, syn_steps=30, expert_epochs=2, max_start_epoch=20, lr_images=100.0, lr_lr=1e-6,
                          lr_teacher=0.01, batch_syn=None, init="real"),
    "cifar100_ipc1": dict(ipc=1, syn_steps=40, expert_epochs=3, max_start_epoch=15, lr_images=100.0, lr_lr=1e-5,
                          lr_teacher=0.01, batch_syn=None, init="representative", balanced_inner_loss=False),
    "cifar100_ipc10": dict(ipc=10, syn_steps=20, expert_epochs=2, max_start_epoch=30, lr_images=1000.0, lr_lr=1e-5,
                           lr_teacher=0.01, batch_syn=128, init="representative", balanced_inner_loss=False),
}

PRESETS: dict[str, dict[str, Any]] = {}
for _name, _values in _TABLE.items():
    PRESETS[_name] = {"preset": _name, "iterations": 5000, "init": "real", "momentum": 0.5, "lr_momentum": 0.5,
                      **_values}
    PRESETS[f"{_name}_ast"] = {**PRESETS[_name], "preset": f"{_name}_ast", **AST_SWITCHES}
for _name, _values in _AST_OFFICIAL.items():
    PRESETS[f"{_name}_ast_official"] = {"preset": f"{_name}_ast_official", "iterations": 5000, "momentum": 0.5,
                                        "lr_momentum": 0.5, **AST_SWITCHES, "distance_from": "student_start",
                                        **_values}


# ---------------------------------------------------------------------------------------------------------------
# The synthesizer
# ---------------------------------------------------------------------------------------------------------------
@SYNTHESIZERS.register("mtt")
class TrajectoryMatching(GradientSynthesizer):
    """Matching training trajectories (MTT, CVPR 2022) with AST's switches. Learns ``x`` and the student rate
    ``lr`` (saved in the set: evaluate with ``evaluator.lr=learned``)."""

    Config = MTTConfig
    presets = PRESETS
    shares_work = True
    replicated_terms = ("syn_lr",)

    # -- setup ----------------------------------------------------------------------------------------------------
    def build(self, real: RealData) -> None:
        cfg = self.config
        if not cfg.experts:
            raise ValueError("mtt needs experts: set synthesizer.experts to an expert file or folder "
                             "(train them with scripts/train_experts.py)")
        if cfg.segments % self.dist.world_size:
            raise ValueError(f"mtt runs synthesizer.segments={cfg.segments} trajectory segments per iteration over "
                             f"{self.dist.world_size} processes: set segments to a multiple of {self.dist.world_size}")
        self.buffer = ExpertBuffer(cfg.experts, max_experts=cfg.max_experts)
        header = self.buffer.header
        self._check_experts(real, header)
        self.layout = self.buffer.layout
        self.student = self._build_student(real, header)
        self.augment = build_augment(cfg.augment, real.info.name, cfg.dsa_strategy)

    def evaluation_model(self) -> tuple[str | None, dict[str, Any]]:
        """The experts' architecture (the student's)."""
        return self.buffer.header["model"], dict(self.buffer.header["model_kwargs"])

    def init_synthetic(self, real: RealData) -> dict[str, nn.Parameter]:
        cfg = self.config
        if cfg.init == "representative":
            x = self.representative_images(real)
        else:
            x = self.init_images(real, cfg.ipc, cfg.init)
        lr = torch.tensor(float(cfg.lr_teacher), device=self.device)
        return {"x": nn.Parameter(x), "lr": nn.Parameter(lr)}

    def _check_experts(self, real: RealData, header: dict[str, Any]) -> None:
        cfg = self.config
        enc = real.encoding.to_meta()
        if not same_encoding(header["encoding"], enc):
            raise ExpertFileError(f"the experts in {cfg.experts} were trained on data encoded as {header['encoding']} "
                                  f"but the real data is encoded as {enc} (ZCA on/off must match: set dataset.zca)")
        args = header["model_args"]
        shape = [int(real.x.shape[1]), int(real.num_classes), [int(s) for s in real.x.shape[2:]]]
        if [args["in_channels"], args["num_classes"], list(args["image_size"])] != shape:
            raise ExpertFileError(f"the experts in {cfg.experts} are for {args}, not this dataset ({shape})")
        # Starts are drawn from [0, max_start_epoch) and need theta*_{t+M}, so t + M <= recorded epochs.
        if cfg.max_start_epoch - 1 + cfg.expert_epochs > self.buffer.num_epochs:
            raise ValueError(f"max_start_epoch ({cfg.max_start_epoch}) - 1 + expert_epochs ({cfg.expert_epochs}) "
                             f"exceeds the {self.buffer.num_epochs} recorded expert epochs; lower max_start_epoch to "
                             f"at most {self.buffer.num_epochs - cfg.expert_epochs + 1}")

    def _build_student(self, real: RealData, header: dict[str, Any]) -> nn.Module:
        args = header["model_args"]
        # Only the architecture and buffers matter: the parameters come from the expert trajectory every iteration.
        family = ModelFamily(header["model"], in_channels=args["in_channels"], num_classes=args["num_classes"],
                             image_size=tuple(args["image_size"]), seed=derive_seed(self.seed, STUDENT_STREAM),
                             **header["model_kwargs"])
        student = family.build(0, self.device)
        if ParamLayout.from_module(student) != self.layout:
            raise ExpertFileError(f"model '{header['model']}' does not have the parameter layout recorded in the "
                                  f"expert files (was the architecture changed?)")
        for p in student.parameters():
            p.requires_grad_(False)
        return student.train()  # MTT's student runs in train mode (batch statistics for batch-norm variants)

    def optimizers(self) -> list[torch.optim.Optimizer]:
        cfg = self.config
        return [torch.optim.SGD([self.params["x"]], lr=cfg.lr_images, momentum=cfg.momentum),
                torch.optim.SGD([self.params["lr"]], lr=cfg.lr_lr, momentum=cfg.lr_momentum)]

    @torch.no_grad()
    def representative_images(self, real: RealData) -> Tensor:
        """AST's representative initialisation: per class, the real images nearest to k-means centres of an expert's
        logits (the expert drawn from the buffer, its last snapshot, as AST's ``get_repre_images``).

        Shape: (K * ipc, C, H, W), class-major.
        """
        cfg = self.config
        self.check_ipc(real, cfg.ipc)
        _, traj = self.buffer.sample(self.generator)
        params = self.layout.unflatten(traj[-1].to(self.device, torch.float32))
        picks = []
        for c in range(real.num_classes):
            idx = real.class_indices(c)
            # Chunked: a whole class at once is gigabytes of activations; exact for instance-norm ConvNets.
            logits = torch.cat([functional_call(self.student, params, (real.x[idx[i : i + 500]],)).float().cpu()
                                for i in range(0, idx.numel(), 500)])
            local = representative_indices(logits, cfg.ipc, self.generator, clusters=cfg.representative_clusters)
            picks.append(idx[local.to(idx.device)])
        return real.x[torch.cat(picks)].detach().clone().to(self.device)

    # -- one iteration --------------------------------------------------------------------------------------------
    def plan_inner(self, num_images: int) -> InnerPlan:
        """Mini-batches (MTT: a fresh permutation split into ``batch_syn`` chunks, taken from the end) and per-sample
        DSA draws of every student step, drawn from :attr:`generator`."""
        cfg = self.config
        size = cfg.batch_syn or num_images
        batches: list[Tensor] = []
        chunks: list[Tensor] = []
        for _ in range(cfg.syn_steps):
            if not chunks:
                chunks = list(torch.randperm(num_images, generator=self.generator).split(size))
            batches.append(chunks.pop().to(self.device))
        params = [self.augment.sample_params(len(b), self.generator, device=self.device) for b in batches]
        return InnerPlan(batches, params)

    def build_unroll(self, step: int) -> tuple[TrajectoryUnroll, dict[str, float]]:
        """Draws the expert, the start epoch, the perturbation and the plan of one iteration; returns the unroll and
        what was drawn (``expert``, ``start_epoch``, ``ce_scale``) for the log."""
        cfg = self.config
        expert, traj = self.buffer.sample(self.generator)
        start = int(torch.randint(0, cfg.max_start_epoch, (1,), generator=self.generator))
        dev = self.device

        def snap(e: int) -> Tensor:
            return traj[e].to(dev, torch.float32)

        expert_start, target = snap(start), snap(start + cfg.expert_epochs)
        theta0 = expert_start
        if cfg.weight_perturbation:
            theta0 = perturb_conv_weights(expert_start, self.layout, cfg.weight_perturbation, self.generator)
        reference = expert_start if cfg.distance_from == "expert" else theta0
        intermediate = []
        if cfg.intermediate_matching:
            every = cfg.syn_steps // cfg.expert_epochs
            intermediate = [(every * j, snap(start + j)) for j in range(1, cfg.expert_epochs)]
        scale = balance_factor(start, cfg.max_start_epoch) if cfg.balanced_inner_loss else 1.0
        terms = {"expert": float(expert), "start_epoch": float(start), "ce_scale": scale}
        unroll = TrajectoryUnroll(self.student, self.layout, self.labels, self.plan_inner(self.params["x"].shape[0]),
                                  self.augment, theta0, target, reference=reference, intermediate=intermediate,
                                  intermediate_weight=cfg.intermediate_matching, inner_momentum=cfg.inner_momentum,
                                  ce_scale=scale)
        return unroll, terms

    def loss(self, real: RealData, step: int) -> tuple[Tensor, dict[str, float]]:
        """MTT Eq. 2 (plus AST's terms) through the unroll, with the draws of the iteration and the learned rate.

        With S = ``segments``: the mean of Eq. 2 over S segments, of which this rank unrolls its share (every
        segment's draws are made, in order, on every rank); the drawn values are logged as their mean."""
        cfg = self.config
        drawn = [self.build_unroll(step) for _ in range(cfg.segments)]
        value: Tensor | None = None
        terms: dict[str, float] = {}
        for s in self.dist.owned(cfg.segments):
            unroll, drawn_terms = drawn[s]
            part = unroll.loss(self.params["x"], self.params["lr"], memory_saving=cfg.memory_saving)
            if cfg.segments > 1:  # S = 1 keeps MTT's loss (and its bits) untouched
                part = part / cfg.segments
                drawn_terms = {k: v / cfg.segments for k, v in drawn_terms.items()}
            value = part if value is None else value + part
            terms = {k: terms.get(k, 0.0) + v for k, v in drawn_terms.items()}
        assert value is not None  # build() checked that every rank owns a segment
        return value, {**terms, "syn_lr": float(self.params["lr"].detach())}

    # -- state and output -----------------------------------------------------------------------------------------
    def extra_state(self) -> dict[str, Any]:
        return {"buffer": self.buffer.state_dict()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if "buffer" in state:
            self.buffer.load_state_dict(state["buffer"])

    def synthetic_set(self, real: RealData) -> SyntheticSet:
        """Images, labels, the learned student rate ``lr`` (0-d) and the encoding tensors (ZCA) with metadata."""
        header = self.buffer.header
        tensors = {"x": self.params["x"].detach().cpu().clone(), "y": self.labels.detach().cpu().clone(),
                   "lr": self.params["lr"].detach().cpu().clone().reshape(())}
        tensors.update(real.encoding.tensors())
        meta = self.base_meta(
            real, ipc=self.config.ipc, learned=["lr", "x"], step=self.iteration, eval_model=header["model"],
            eval_model_kwargs=dict(header["model_kwargs"]), eval_lr="learned",
            experts={"path": str(self.config.experts), "num_experts": self.buffer.num_experts,
                     "epochs": self.buffer.num_epochs, "seed": header["seed"],
                     "expert_config": header["expert_config"]},
        )
        return SyntheticSet(tensors, meta)
