"""DataDAM: dataset distillation with attention matching (Sajedi et al., ICCV 2023).

Each iteration samples a freshly initialised network (frozen, train mode) and, for every class c, applies
DSA with one parameter draw shared by the real batch and the synthetic images of c. The loss is

    L = s * sum_l sum_c || mean_i a_l(x_real_c,i) - mean_j a_l(x_syn_c,j) ||^2            (SAM, Eq. 3-4)
      + s * lambda * sum_c || mean_i psi(x_real_c,i) - mean_j psi(x_syn_c,j) ||^2         (L_MMD, Eq. 5)

where a_l(x) = vec(sum_k |F_l,k(x)|^p) / ||.||_2 is the spatial attention map of the activation F_l (C, H, W)
of block l (every block but the last, whose information enters through the embedding term), psi is the
flattened final feature map, lambda the task balance and s = 100 the scale of the official code.

The official code and its paper disagree on several settings; both are presets here (``paper`` is the
default, ``official`` reproduces ``main_DataDAM.py``): see :data:`DataDAM.presets` and the README.

Batching: as in the official code, the real images of all classes go through the network in one pass and
the synthetic images in another (so batch-norm statistics are those of the official code); ``batched=False``
forwards class by class instead, which uses less memory and gives the same loss for networks without
cross-sample statistics (e.g. the instance-norm ConvNet of the ``paper`` preset).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ddistill.data import RealData
from ddistill.utils.perf import compiled

from ._matching import FreshNetworkMatching, MatchingConfig
from .base import SYNTHESIZERS


def attention_map(feature: Tensor, power: float = 4.0) -> Tensor:
    """Spatial attention map of a feature map, DataDAM Eq. (3): channel-wise sum of |F|^p, flattened and
    L2-normalised per sample (computed in float32).

    Shape: (B, C, H, W) -> (B, H*W).
    """
    # Accumulate in float32 without materialising a float32 copy of the (B, C, H, W) map: for the real batch
    # (e.g. 2560 x 128 x 32 x 32) that copy and its |.|^p temporaries cost more than the forward pass itself.
    a = feature.abs().pow(power).sum(1, dtype=torch.float32) if power != 1 else feature.abs().sum(1, dtype=torch.float32)
    return F.normalize(a.reshape(a.shape[0], -1), p=2.0, dim=1)


def class_mean_distance(real: Tensor, syn: Tensor, real_sizes: list[int], syn_size: int) -> Tensor:
    """sum_c || mean(real_c) - mean(syn_c) ||^2 for class-major batches (the official ``MSE_B`` error).

    Shape: real (sum(real_sizes), D), syn (K * syn_size, D) -> ().
    """
    mean_real = torch.stack([r.mean(0) for r in torch.split(real, real_sizes)])
    mean_syn = syn.reshape(len(real_sizes), syn_size, -1).mean(1)
    return ((mean_real - mean_syn.reshape(mean_real.shape)) ** 2).sum()


@dataclass
class DataDAMConfig(MatchingConfig):
    """DataDAM hyper-parameters. Defaults = the paper's table (preset ``paper``).

    Args:
        preset: name of the preset these values came from ("paper", "official" or "custom"), recorded in the set.
        attention_power: p of the attention map (paper 4; the official code calls it with 1).
        task_balance: lambda weighting the embedding (MMD) term (0.01 low resolution, 0.02 high resolution).
        loss_scale: factor on both terms (100 in the official code).
        batched: one pass for all classes' real images and one for all synthetic images (official);
            False = class by class.
        class_chunk: 0 = every class's loss in one graph, one backward (the official code). k > 0 (needs
            ``batched: false``): the classes in chunks of k, each chunk's real batches materialised, its loss
            back-propagated and its graph freed before the next; the gradient is the same sum over classes (up to
            float summation order) while memory holds k classes' batches and graphs instead of all K (ImageNet-1K:
            1000 classes' synthetic graphs do not fit any machine).
    """

    preset: str = "paper"
    iterations: int = 8000
    batch_real: int = 256
    attention_power: float = 4.0
    task_balance: float = 0.01
    loss_scale: float = 100.0
    batched: bool = True
    class_chunk: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.class_chunk < 0:
            raise ValueError(f"class_chunk must be >= 0 (0 = all classes in one backward), got {self.class_chunk}")
        if self.class_chunk and self.batched:
            # Chunks would change the batch statistics a batched pass normalises with (the official preset's BN).
            raise ValueError("class_chunk needs batched: false (a batched pass normalises over every class at once)")


@SYNTHESIZERS.register("datadam")
class DataDAM(FreshNetworkMatching):
    Config = DataDAMConfig
    presets = {
        # The paper's hyper-parameter table: instance-norm ConvNet, p = 4, 8000 iterations, 256 real per class.
        "paper": {"preset": "paper", "model": "convnet", "model_kwargs": {}, "attention_power": 4.0,
                  "iterations": 8000, "batch_real": 256, "lr_images": 1.0, "momentum": 0.5, "task_balance": 0.01},
        # What main_DataDAM.py runs: get_network('ConvNet') builds a batch-norm ConvNet, get_attention is called
        # with exp=1, Iteration defaults to 20000 and batch_real to 64.
        "official": {"preset": "official", "model": "convnet", "model_kwargs": {"norm": "batchnorm"},
                     "attention_power": 1.0, "iterations": 20000, "batch_real": 64, "lr_images": 1.0,
                     "momentum": 0.5, "task_balance": 0.01},
    }

    def build(self, real: RealData) -> None:
        super().build(real)
        # Compiled, |F|^p, the channel sum and the normalisation fuse into one pass over each feature map.
        self.attention = compiled(attention_map) if self.perf.compile else attention_map

    def loss(self, real: RealData, step: int) -> tuple[Tensor, dict[str, float]]:
        """SAM + lambda * MMD (Eq. 3-5) times the scale, with the two terms (before the scale) for the log."""
        net = self.sample_network(step)
        if self.config.class_chunk:
            return self._chunked_loss(net, real)
        x_real, x_syn = self.siamese_class_batches(real)
        k, ipc = len(self.classes), self.config.ipc  # this rank's classes (all of them in one process)
        real_sizes = self.real_batch_sizes(real)
        if self.config.batched:
            return self._loss_from(net, x_real, x_syn, real_sizes, ipc)
        total, terms = x_syn.new_zeros(()), {"sam": 0.0, "mmd": 0.0}
        starts = [sum(real_sizes[:j]) for j in range(k)]
        for j in range(k):
            xr = x_real[starts[j] : starts[j] + real_sizes[j]]
            part, part_terms = self._loss_from(net, xr, x_syn[j * ipc : (j + 1) * ipc], [real_sizes[j]], ipc)
            total = total + part
            terms = {name: terms[name] + part_terms[name] for name in terms}
        return total, terms

    @property
    def backward_in_loss(self) -> bool:
        return bool(self.config.class_chunk)

    def _chunked_loss(self, net: nn.Module, real: RealData) -> tuple[Tensor, dict[str, float]]:
        """The class-by-class loss, back-propagated chunk by chunk (``class_chunk`` classes at a time); returns the
        detached total. The draws are the unchunked loss's (all made first, in class order)."""
        ipc, chunk = self.config.ipc, self.config.class_chunk
        draws = self.class_draws(real)
        total, terms = 0.0, {"sam": 0.0, "mmd": 0.0}
        for start in range(0, len(draws), chunk):
            part_draws = draws[start : start + chunk]
            x_real, x_syn = self.siamese_batches_of(real, part_draws)
            sizes = [int(idx.numel()) for _, idx, _ in part_draws]
            offsets = [sum(sizes[:j]) for j in range(len(sizes))]
            part = x_syn.new_zeros(())
            for j in range(len(part_draws)):
                loss, part_terms = self._loss_from(net, x_real[offsets[j] : offsets[j] + sizes[j]],
                                                   x_syn[j * ipc : (j + 1) * ipc], [sizes[j]], ipc)
                part = part + loss
                terms = {name: terms[name] + part_terms[name] for name in terms}
            part.backward()  # gradients accumulate in x.grad; this chunk's graph and batches are freed
            total += float(part.detach())
        return torch.tensor(total, dtype=torch.float32), terms

    def _loss_from(self, net: nn.Module, x_real: Tensor, x_syn: Tensor, real_sizes: list[int],
                   ipc: int) -> tuple[Tensor, dict[str, float]]:
        return self.synthetic_loss(net, x_syn, self.real_statistics(net, x_real), real_sizes, ipc)

    def real_statistics(self, net: nn.Module, x_real: Tensor) -> tuple[list[Tensor], Tensor]:
        """Attention maps of every block but the last and the embedding of the real batch (no graph).

        Shape: (B, C, H, W) -> ([(B, H_l*W_l)] per block, (B, D)).
        """
        with torch.no_grad(), self.perf.autocast(self.device):
            feats, emb = net.forward_features(self.perf.prepare_input(x_real))
            # Reduce each real map to its attention right away: the (K*batch_real, C, H, W) maps are the
            # largest tensors of the step and nothing else needs them.
            return [self.attention(f, self.config.attention_power) for f in feats[:-1]], emb.float()

    def synthetic_loss(self, net: nn.Module, x_syn: Tensor, real_stats: tuple[list[Tensor], Tensor],
                       real_sizes: list[int], ipc: int) -> tuple[Tensor, dict[str, float]]:
        """SAM + lambda * MMD (Eq. 3-5) of the synthetic batch against the real statistics, times the scale, and the
        unscaled terms ``{"sam", "mmd"}``."""
        cfg = self.config
        att_real, emb_real = real_stats
        with self.perf.autocast(self.device):
            feats_syn, emb_syn = net.forward_features(self.perf.prepare_input(x_syn))
        sam = x_syn.new_zeros(())
        for a_real, f_syn in zip(att_real, feats_syn[:-1]):
            sam = sam + class_mean_distance(a_real, self.attention(f_syn, cfg.attention_power), real_sizes, ipc)
        mmd = class_mean_distance(emb_real, emb_syn.float(), real_sizes, ipc)
        terms = {"sam": float(sam.detach()), "mmd": float(mmd.detach())}
        return cfg.loss_scale * (sam + cfg.task_balance * mmd), terms
