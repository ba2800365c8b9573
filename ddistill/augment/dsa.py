"""Differentiable siamese augmentation (DSA; Zhao & Bilen, "Dataset Condensation with Differentiable Siamese
Augmentation", ICML 2021) as an ``nn.Module`` with explicit, replayable parameters.

Behaviour follows the authors' reference code (``VICO-UoE/DatasetCondensation``, ``utils.py``: ``ParamDiffAug``,
``DiffAugment``, ``AUGMENT_FNS``), with one deliberate interface change: instead of re-seeding the global RNG
(``set_seed_DiffAug``) to repeat a draw on the real and the synthetic batch, parameters are drawn once from an explicit
:class:`torch.Generator` into a dict and replayed. A draw with batch dim 1 broadcasts to any batch, which is exactly
the reference's siamese mode (``theta[:] = theta[0]``: one parameter set for the whole batch).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ddistill.augment import functional as AF

__all__ = ["DSA", "NoAugment", "default_strategy", "FULL_STRATEGY", "DIGIT_STRATEGY", "VALID_OPS"]

#: op groups of the reference's ``AUGMENT_FNS``; ``color`` = brightness, then saturation, then contrast
VALID_OPS: tuple[str, ...] = ("color", "crop", "cutout", "flip", "scale", "rotate")
#: strategy used by the DSA authors for natural images (CIFAR, FashionMNIST, ...)
FULL_STRATEGY = "color_crop_cutout_flip_scale_rotate"
#: the authors drop ``flip`` for digit datasets (MNIST, SVHN): a mirrored digit is a different glyph
DIGIT_STRATEGY = "color_crop_cutout_scale_rotate"
_DIGIT_DATASETS = frozenset({"mnist", "svhn", "digits", "usps"})

#: params-dict keys each op group reads
_KEYS: dict[str, tuple[str, ...]] = {
    "color": ("brightness", "saturation", "contrast"),
    "crop": ("crop",),
    "cutout": ("cutout",),
    "flip": ("flip",),
    "scale": ("scale",),
    "rotate": ("rotate",),
}


def default_strategy(dataset_name: str) -> str:
    """Returns the DSA strategy the authors use for ``dataset_name``.

    Digit datasets (``mnist``, ``svhn``, ``digits``, ``usps``; case-insensitive) get :data:`DIGIT_STRATEGY` (no flip,
    per the reference repository's readme), everything else :data:`FULL_STRATEGY`.
    """
    return DIGIT_STRATEGY if dataset_name.strip().lower() in _DIGIT_DATASETS else FULL_STRATEGY


def _parse_strategy(strategy: str) -> tuple[str, ...]:
    # the reference treats "none"/"None"/"" as "no augmentation"
    if strategy.strip().lower() in ("", "none"):
        return ()
    ops = tuple(strategy.strip().lower().split("_"))
    bad = [op for op in ops if op not in VALID_OPS]
    if bad:
        raise ValueError(f"unknown DSA op(s) {bad} in strategy '{strategy}'; valid ops: {list(VALID_OPS)}")
    return ops


def _parse_mode(mode: str) -> str:
    # accept the reference's aug_mode letters too: 'S' (single) and 'M' (multiple)
    m = mode.strip().lower()
    if m in ("single", "s"):
        return "single"
    if m in ("all", "m"):
        return "all"
    raise ValueError(f"unknown DSA mode '{mode}'; choose 'single' (reference 'S') or 'all' (reference 'M')")


def _keep_format(out: Tensor, like: Tensor) -> Tensor:
    """Makes ``out`` contiguous (as the reference does) in ``like``'s memory format (channels_last stays so)."""
    if like.is_contiguous(memory_format=torch.channels_last) and not like.is_contiguous():
        return out.contiguous(memory_format=torch.channels_last)
    return out.contiguous()


class DSA(nn.Module):
    """Differentiable siamese augmentation (Zhao & Bilen, ICML 2021).

    ``mode="single"`` (the reference's default ``aug_mode='S'``) applies ONE op group per call, chosen uniformly among
    ``strategy.split('_')``, to the whole batch; ``mode="all"`` (reference ``'M'``) applies every op group in strategy
    order. Parameters are per sample unless sampled with ``n=1``, in which case they broadcast to the batch (siamese).

    Params dict (from :meth:`sample_params`; every tensor has leading dim n):
        - ``"op"``: long (1,), index into :attr:`ops` of the chosen group; ``-1`` = all groups (``mode="all"``).
        - ``"brightness"`` (n,) additive offset, ``"saturation"`` (n,) multiplier, ``"contrast"`` (n,) multiplier:
          only for ``color``.
        - ``"crop"`` (n, 2) uniforms in [0, 1) (or long row/col shifts), ``"cutout"`` (n, 2) uniforms (or long
          row/col centres): integer ranges depend on the image size, so they are resolved at apply time.
        - ``"flip"`` (n,) bool, ``"scale"`` (n, 2) (sx, sy), ``"rotate"`` (n,) radians.
        Only the keys the chosen group(s) need are present.

    Args:
        strategy: op groups joined by ``_`` (from ``color, crop, cutout, flip, scale, rotate``); ``"none"`` = identity.
            Use :func:`default_strategy` / :meth:`for_dataset` to drop ``flip`` for digit datasets.
        scale: max scale ratio r; sx, sy ~ U[1/r, r).
        rotate: max rotation in degrees; angle ~ U[-rotate, rotate).
        crop: padding ratio; shift ~ U{-s..s}, s = int(size * crop + 0.5).
        cutout: cutout side ratio.
        brightness: brightness offset range; offset ~ (U[0,1) - 0.5) * brightness.
        saturation: saturation multiplier ~ U[0,1) * saturation.
        contrast: contrast multiplier ~ U[0,1) + contrast.
        flip: probability of a horizontal flip.
        mode: ``"single"`` or ``"all"`` (also ``"S"``/``"M"``).

    Shape:
        - input: (B, C, H, W), any C, H, W; output: (B, C, H, W) in the input's memory format.
    """

    def __init__(
        self,
        strategy: str = FULL_STRATEGY,
        scale: float = 1.2,
        rotate: float = 15.0,
        crop: float = 0.125,
        cutout: float = 0.5,
        brightness: float = 1.0,
        saturation: float = 2.0,
        contrast: float = 0.5,
        flip: float = 0.5,
        mode: str = "single",
    ) -> None:
        super().__init__()
        self.strategy = strategy
        self.ops: tuple[str, ...] = _parse_strategy(strategy)
        self.mode = _parse_mode(mode)
        self.scale = float(scale)
        self.rotate = float(rotate)
        self.crop = float(crop)
        self.cutout = float(cutout)
        self.brightness = float(brightness)
        self.saturation = float(saturation)
        self.contrast = float(contrast)
        self.flip = float(flip)

    @classmethod
    def for_dataset(cls, dataset_name: str, **kwargs: float | str) -> DSA:
        """Builds a DSA with the authors' strategy for ``dataset_name`` (no ``flip`` for digits); ``kwargs`` (other
        than ``strategy``) are forwarded to the constructor."""
        return cls(strategy=default_strategy(dataset_name), **kwargs)  # type: ignore[arg-type]

    # ------------------------------------------------------------------------------------------------------------------
    def _sample_group(
        self, group: str, n: int, generator: torch.Generator | None, device: torch.device | str | None
    ) -> dict[str, Tensor]:
        if group == "color":  # draw order = application order of the reference: brightness, saturation, contrast
            return {
                "brightness": AF.sample_brightness(n, self.brightness, generator, device),
                "saturation": AF.sample_saturation(n, self.saturation, generator, device),
                "contrast": AF.sample_contrast(n, self.contrast, generator, device),
            }
        if group == "crop":
            return {"crop": AF.sample_crop(n, generator, device)}
        if group == "cutout":
            return {"cutout": AF.sample_cutout(n, generator, device)}
        if group == "flip":
            return {"flip": AF.sample_flip(n, self.flip, generator, device)}
        if group == "scale":
            return {"scale": AF.sample_scale(n, self.scale, generator, device)}
        if group == "rotate":
            return {"rotate": AF.sample_rotate(n, self.rotate, generator, device)}
        raise ValueError(f"unknown DSA op '{group}'; valid ops: {list(VALID_OPS)}")  # unreachable after parsing

    def sample_params(
        self, n: int, generator: torch.Generator | None = None, device: torch.device | str | None = None
    ) -> dict[str, Tensor]:
        """Draws the op choice and the parameters it needs.

        Draw order mirrors the reference: the op index first (``mode="single"``), then each needed quantity as one
        ``torch.rand(n)``. Only ``generator`` is consumed (torch's default generator if None); nothing is reseeded.

        Args:
            n: number of parameter sets: the batch size for per-sample augmentation, 1 for siamese broadcast.
            generator: random source; tensors are drawn on its device and moved to ``device``.
            device: device of the returned tensors (default: the generator's device, else CPU).

        Returns:
            Params dict, see the class docstring; ``{}`` for an empty strategy.
        """
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if not self.ops:
            return {}
        draw_device = generator.device if generator is not None else device
        if self.mode == "single":
            op = torch.randint(0, len(self.ops), (1,), generator=generator, device=draw_device)
            groups: tuple[str, ...] = (self.ops[int(op.item())],)
        else:
            op = torch.full((1,), -1, dtype=torch.long)
            groups = tuple(dict.fromkeys(self.ops))  # a repeated group reuses one draw
        params: dict[str, Tensor] = {"op": op if device is None else op.to(device)}
        for group in groups:
            params.update(self._sample_group(group, n, generator, device))
        return params

    def _apply(self, group: str, x: Tensor, params: dict[str, Tensor]) -> Tensor:
        missing = [k for k in _KEYS[group] if k not in params]
        if missing:
            raise KeyError(f"DSA op '{group}' needs params {list(_KEYS[group])}; missing {missing}")
        if group == "color":
            x = AF.brightness(x, params["brightness"])
            x = AF.saturation(x, params["saturation"])
            return AF.contrast(x, params["contrast"])
        if group == "crop":
            return AF.crop(x, params["crop"], self.crop)
        if group == "cutout":
            return AF.cutout(x, params["cutout"], self.cutout)
        if group == "flip":
            return AF.flip(x, params["flip"])
        if group == "scale":
            return AF.scale(x, params["scale"])
        return AF.rotate(x, params["rotate"])

    def forward(
        self, x: Tensor, params: dict[str, Tensor] | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """Augments ``x``; differentiable w.r.t. ``x``.

        Args:
            x: image batch.
            params: a dict from :meth:`sample_params` with leading dim B (per sample) or 1 (broadcast, siamese).
                If None, per-sample params are drawn from ``generator`` (n = B). The same params always give a
                bit-identical output.
            generator: random source used only when ``params`` is None.

        Shape:
            - x: (B, C, H, W); output: (B, C, H, W), same memory format as ``x``.
        """
        if x.dim() != 4:
            raise ValueError(f"DSA expects an image batch of shape (B, C, H, W), got {tuple(x.shape)}")
        if not self.ops:
            return x
        if params is None:
            params = self.sample_params(x.shape[0], generator, device=x.device)
        if "op" not in params:
            raise KeyError("DSA params need an 'op' entry; build them with DSA.sample_params")
        op = int(params["op"].reshape(-1)[0].item())
        if not -1 <= op < len(self.ops):
            raise ValueError(f"params op index {op} out of range for strategy ops {list(self.ops)}")
        groups = self.ops if op == -1 else (self.ops[op],)
        out = x
        for group in groups:
            out = self._apply(group, out, params)
        return _keep_format(out, x)

    def siamese(self, *xs: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, ...]:
        """Applies ONE draw (``sample_params(1, generator)``) to every tensor in ``xs`` (e.g. a real and a synthetic
        batch of different sizes), as DSA requires for gradient/distribution matching.

        Shape:
            - each x: (B_i, C, H, W); outputs: same shapes.
        """
        if not xs:
            return ()
        params = self.sample_params(1, generator, device=xs[0].device)
        return tuple(self(x, params) for x in xs)

    def extra_repr(self) -> str:
        return (
            f"strategy='{self.strategy}', mode='{self.mode}', scale={self.scale}, rotate={self.rotate}, "
            f"crop={self.crop}, cutout={self.cutout}, brightness={self.brightness}, saturation={self.saturation}, "
            f"contrast={self.contrast}, flip={self.flip}"
        )


class NoAugment(nn.Module):
    """Identity with the :class:`DSA` interface, for runs without augmentation.

    Shape:
        - input: (B, C, H, W); output: the input tensor itself.
    """

    def sample_params(
        self, n: int, generator: torch.Generator | None = None, device: torch.device | str | None = None
    ) -> dict[str, Tensor]:
        """Returns ``{}``: nothing to draw, and no generator state is consumed."""
        return {}

    def forward(
        self, x: Tensor, params: dict[str, Tensor] | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        return x

    def siamese(self, *xs: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, ...]:
        return tuple(xs)
