"""KRR-ST's model pool (``selfsup_dd`` ``model_pool.py``): M networks at different stages of online training on the
synthetic set."""
from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ddistill.models import ModelFamily
from ddistill.utils.progress import progress_bar

__all__ = ["ModelPool"]


class ModelPool:
    """M networks at different stages of online training on the synthetic set (``model_pool.py``).

    Slot ``i``'s ``g``-th initialisation is network ``g * M + i`` of a :class:`ModelFamily`, so every
    (re-)initialisation is reproducible. Each slot has a step counter; :meth:`update` trains the slot one full-batch
    SGD step on ``MSE(model(x), y)`` or, when its counter has reached T, re-initialises it (see
    ``reset_counter``). Parameters are frozen (``requires_grad=False``) outside :meth:`train_step`, so the outer
    backward pass computes no weight gradients.

    Args:
        family: the stream networks are drawn from (``num_classes`` = target dimension D).
        num_models: M.
        online_iteration: T.
        lr, momentum, weight_decay: online SGD.
        reset_counter: restart the counter at re-initialisation (False = the official defect).
        device: where the networks live.
    """

    def __init__(self, family: ModelFamily, num_models: int, online_iteration: int, *, lr: float, momentum: float,
                 weight_decay: float, reset_counter: bool, device: torch.device | str) -> None:
        self.family = family
        self.num_models = int(num_models)
        self.online_iteration = int(online_iteration)
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self.reset_counter = bool(reset_counter)
        self.device = torch.device(device)
        self.counters = [0] * self.num_models
        self.generations = [0] * self.num_models
        self.trainings = 0  # online steps taken (diagnostics; checkpointed)
        self.resets = 0  # re-initialisations after the initial build (diagnostics; checkpointed)
        self.models: list[nn.Module] = []
        self.opts: list[torch.optim.Optimizer] = []
        for i in range(self.num_models):
            model, opt = self._fresh(i, 0)
            self.models.append(model)
            self.opts.append(opt)

    def _fresh(self, slot: int, generation: int) -> tuple[nn.Module, torch.optim.Optimizer]:
        model = self.family.build(generation * self.num_models + slot, self.device)
        model.requires_grad_(False)
        opt = torch.optim.SGD(model.parameters(), lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)
        return model, opt

    def initialize(self, x: Tensor, y: Tensor, steps: list[int], *, progress: bool = False) -> None:
        """Trains slot ``i`` for ``steps[i]`` full-batch steps on ``(x, y)`` and sets its counter to ``steps[i]``.

        Shape: x (N, C, H, W), y (N, D).
        """
        if len(steps) != self.num_models:
            raise ValueError(f"need one step count per model ({self.num_models}), got {len(steps)}")
        bar = progress_bar(total=sum(steps), desc="KRR-ST model pool init", enabled=progress, leave=False)
        for i, t in enumerate(steps):
            for _ in range(int(t)):
                self.train_step(i, x, y)
                bar.update(1)
            self.counters[i] = int(t)
        bar.close()
        self.trainings = 0

    def train_step(self, idx: int, x: Tensor, y: Tensor) -> float:
        """One SGD step of model ``idx`` on the whole set in train mode (BatchNorm batch statistics)."""
        model, opt = self.models[idx], self.opts[idx]
        model.requires_grad_(True)
        model.train()
        loss = F.mse_loss(model(x).float(), y.float())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        model.requires_grad_(False)
        self.trainings += 1
        return float(loss.detach())

    def update(self, idx: int, x: Tensor, y: Tensor) -> str:
        """Online update of slot ``idx`` after an outer step; returns ``"reset"`` or ``"train"``."""
        if self.counters[idx] >= self.online_iteration:
            self.generations[idx] += 1
            self.models[idx], self.opts[idx] = self._fresh(idx, self.generations[idx])
            self.resets += 1
            if self.reset_counter:
                self.counters[idx] = 0
            return "reset"
        self.counters[idx] += 1
        self.train_step(idx, x, y)
        return "train"

    def state_dict(self) -> dict[str, Any]:
        return {
            "counters": list(self.counters),
            "generations": list(self.generations),
            "trainings": self.trainings,
            "resets": self.resets,
            "models": [m.state_dict() for m in self.models],
            "opts": [o.state_dict() for o in self.opts],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if len(state["models"]) != self.num_models:
            raise ValueError(f"checkpoint pool has {len(state['models'])} models, config has {self.num_models}")
        self.generations = [int(g) for g in state["generations"]]
        for i in range(self.num_models):
            # Rebuild the slot's current generation first so the optimiser refers to the right parameters.
            self.models[i], self.opts[i] = self._fresh(i, self.generations[i])
            self.models[i].load_state_dict(state["models"][i])
            # Optimizer.load_state_dict keeps the given momentum tensors (no copy): never share them with the source.
            self.opts[i].load_state_dict(copy.deepcopy(state["opts"][i]))
        self.counters = [int(c) for c in state["counters"]]
        self.trainings = int(state["trainings"])
        self.resets = int(state["resets"])
