"""The student unroll of one trajectory-matching iteration (MTT Eq. 1-2, plus AST's intermediate terms) and its
memory-saving recomputation.

The student network is evaluated with ``torch.func.functional_call`` on views of one flat parameter vector (MTT's
``ReparamModule`` does the same by hand), so the unroll is plain autograd.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from .expert_file import ParamLayout

__all__ = ["InnerPlan", "TrajectoryUnroll"]


@dataclass
class InnerPlan:
    """The random draws of one unroll, fixed before it runs so that a recomputation replays them exactly.

    Args:
        batches: per inner step, indices of the synthetic images in the mini-batch.
        aug_params: per inner step, the DSA parameters (per sample) of that mini-batch ({} = no augmentation).
    """

    batches: list[Tensor]
    aug_params: list[dict[str, Tensor]]


class TrajectoryUnroll:
    """The student unroll of one MTT iteration and its loss (MTT Eq. 1-2, plus AST's intermediate terms).

    ``loss(x, lr)`` backpropagates through the whole unroll with ordinary autograd (memory grows with
    ``syn_steps`` x batch activations, like the official code). ``loss(x, lr, memory_saving=True)`` gives the same
    value and gradient through :class:`_RecomputedUnroll`: the forward pass keeps only theta_n (and the momentum
    v_n) after every step, (P,) vectors, and the backward pass rebuilds one step's graph at a time, from n = N-1
    down to 0, and pulls the adjoints (dL/dtheta_{n+1}, dL/dv_{n+1}) back through it, accumulating dL/dx and
    dL/dalpha. Peak memory is one step's activations (with its second-order graph) plus N+1 parameter vectors; the
    price is one extra first-order pass.

    Args:
        model: the student architecture (its own parameters are ignored; buffers are used).
        layout: flat-vector layout of ``model``'s parameters.
        labels: labels of all synthetic images. Shape: (N_syn,).
        plan: the mini-batches and augmentation draws of every step.
        augment: DSA module (or NoAugment) applied as ``augment(xb, params)``.
        theta0: student start (theta*_t, possibly perturbed). Shape: (P,).
        target: theta*_{t+M}. Shape: (P,).
        reference: the point the normaliser ||reference - target||^2 is measured from (theta*_t). Shape: (P,).
        intermediate: ``(step n_j, theta*_{t+j})`` pairs matched with weight ``intermediate_weight``.
        inner_momentum: heavy-ball momentum mu of the student's SGD (0 = MTT).
        ce_scale: factor on the inner cross-entropy (AST's balance factor; 1 = MTT).
    """

    def __init__(self, model: nn.Module, layout: ParamLayout, labels: Tensor, plan: InnerPlan, augment: nn.Module,
                 theta0: Tensor, target: Tensor, *, reference: Tensor | None = None,
                 intermediate: list[tuple[int, Tensor]] = (), intermediate_weight: float = 0.0,
                 inner_momentum: float = 0.0, ce_scale: float = 1.0) -> None:
        self.model, self.layout, self.labels, self.plan, self.augment = model, layout, labels, plan, augment
        self.theta0 = theta0.detach()
        self.mu = float(inner_momentum)
        self.ce_scale = float(ce_scale)
        reference = self.theta0 if reference is None else reference.detach()
        # Every matched point: step n -> (weight, target, normaliser ||reference - target||^2).
        self.terms: dict[int, tuple[float, Tensor, Tensor]] = {}
        if intermediate_weight:
            for n, tgt in intermediate:
                if 0 < n < self.steps:
                    self.terms[n] = (float(intermediate_weight), tgt.detach(), ((reference - tgt) ** 2).sum())
        self.terms[self.steps] = (1.0, target.detach(), ((reference - target) ** 2).sum())

    @property
    def steps(self) -> int:
        return len(self.plan.batches)

    # -- one SGD step of the student ------------------------------------------------------------------------------
    def step(self, theta: Tensor, v: Tensor | None, x: Tensor, lr: Tensor, n: int,
             create_graph: bool) -> tuple[Tensor, Tensor]:
        """theta_{n+1}, v_{n+1} from theta_n (which must require grad), v_n (None at n = 0), MTT Eq. 1.

        Shape: theta, v (P,); x (N_syn, C, H, W); lr ().
        """
        idx = self.plan.batches[n]
        xb = self.augment(x[idx], self.plan.aug_params[n])
        logits = functional_call(self.model, self.layout.unflatten(theta), (xb,))
        ce = F.cross_entropy(logits, self.labels[idx]) * self.ce_scale
        (grad,) = torch.autograd.grad(ce, theta, create_graph=create_graph)
        # Heavy-ball momentum as torch.optim.SGD (dampening 0) and AST: the first buffer is the gradient itself.
        v_new = grad if (v is None or self.mu == 0.0) else self.mu * v + grad
        return theta - lr * v_new, v_new

    def _term(self, n: int, theta: Tensor) -> Tensor:
        w, tgt, norm = self.terms[n]
        return w * ((theta - tgt) ** 2).sum() / norm

    def _term_grad(self, n: int, theta: Tensor) -> Tensor:
        w, tgt, norm = self.terms[n]
        return (2.0 * w / norm) * (theta - tgt)

    # -- the two ways to get the loss -----------------------------------------------------------------------------
    def loss(self, x: Tensor, lr: Tensor, *, memory_saving: bool = False) -> Tensor:
        """L = sum over matched steps n of w_n ||theta_n - theta*_n||^2 / ||theta*_t - theta*_n||^2 (MTT Eq. 2 for
        n = N, w = 1; AST's intermediate matching for the others), differentiable w.r.t. ``x`` and ``lr``.

        Shape: x (N_syn, C, H, W), lr () -> ().
        """
        if memory_saving:
            return _RecomputedUnroll.apply(x, lr, self)
        theta = self.theta0.clone().requires_grad_(True)
        v = None
        total = x.new_zeros(())
        for n in range(self.steps):
            theta, v = self.step(theta, v, x, lr, n, create_graph=True)
            if n + 1 in self.terms:
                total = total + self._term(n + 1, theta)
        return total

    def forward_states(self, x: Tensor, lr: Tensor) -> tuple[list[Tensor], list[Tensor | None], Tensor, Tensor]:
        """Unrolls without keeping graphs.

        Returns:
            theta_0..theta_{N-1}, v_0..v_{N-1} (None where unused), theta_N and the loss value.
        """
        thetas: list[Tensor] = []
        vs: list[Tensor | None] = []
        theta, v = self.theta0.clone(), None
        total = x.new_zeros(())
        for n in range(self.steps):
            thetas.append(theta)
            vs.append(v if self.mu else None)
            with torch.enable_grad():
                theta_n = theta.detach().requires_grad_(True)
                new_theta, v = self.step(theta_n, v, x, lr, n, create_graph=False)
            theta, v = new_theta.detach(), v.detach()
            if n + 1 in self.terms:
                total = total + self._term(n + 1, theta)
        return thetas, vs, theta, total.detach()

    def backward_sweep(self, x: Tensor, lr: Tensor, thetas: list[Tensor], vs: list[Tensor | None],
                       theta_last: Tensor, grad_out: Tensor) -> tuple[Tensor, Tensor]:
        """Reverse-mode through the unroll one recomputed step at a time. Returns (dL/dx, dL/dlr) * grad_out."""
        g_theta = grad_out * self._term_grad(self.steps, theta_last)
        g_v: Tensor | None = None
        gx = torch.zeros_like(x)
        glr = torch.zeros_like(lr)
        for n in reversed(range(self.steps)):
            with torch.enable_grad():
                theta_n = thetas[n].detach().requires_grad_(True)
                v_n = vs[n].detach().requires_grad_(True) if vs[n] is not None else None
                x_n = x.detach().requires_grad_(True)
                lr_n = lr.detach().requires_grad_(True)
                new_theta, new_v = self.step(theta_n, v_n, x_n, lr_n, n, create_graph=True)
                outputs, adjoints = [new_theta], [g_theta]
                if g_v is not None:
                    outputs.append(new_v)
                    adjoints.append(g_v)
                inputs = [theta_n, x_n, lr_n] + ([v_n] if v_n is not None else [])
                grads = torch.autograd.grad(outputs, inputs, adjoints, allow_unused=True)
            if grads[1] is not None:
                gx += grads[1]
            if grads[2] is not None:
                glr += grads[2]
            g_theta = grads[0]
            g_v = grads[3] if v_n is not None else None
            if n in self.terms and n > 0:
                g_theta = g_theta + grad_out * self._term_grad(n, thetas[n])
        return gx, glr


class _RecomputedUnroll(torch.autograd.Function):
    """Autograd node for :meth:`TrajectoryUnroll.loss` with ``memory_saving``: forward without graphs, backward by
    per-step recomputation."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, lr: Tensor, unroll: TrajectoryUnroll) -> Tensor:  # type: ignore[override]
        thetas, vs, theta_last, total = unroll.forward_states(x.detach(), lr.detach())
        ctx.unroll, ctx.thetas, ctx.vs, ctx.theta_last = unroll, thetas, vs, theta_last
        ctx.save_for_backward(x, lr)
        return total

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor, Tensor, None]:  # type: ignore[override]
        x, lr = ctx.saved_tensors
        gx, glr = ctx.unroll.backward_sweep(x, lr, ctx.thetas, ctx.vs, ctx.theta_last, grad_out)
        return gx, glr, None
