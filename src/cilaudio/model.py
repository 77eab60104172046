"""PANNs CNN14 (without ``fc1``) with selectable normalisation, a growing classifier,
activation recording for CKA and block freezing.

Architecture (``docs/method.md``, section *Model*): input log-mel ``(batch, time, mel)``,
``bn0`` = BatchNorm over the mel bins (in every variant), six conv blocks of
``width * (1, 2, 4, 8, 16, 32)`` channels, each ``conv3x3 -> norm -> ReLU -> conv3x3 -> norm ->
ReLU -> 2x2 average pooling`` (pooling after every block, block 6 included) followed by dropout
in training, then mean over frequency, max + mean over time and a linear classifier.

Normalisation variants inside the blocks (``ModelSettings.norm``):

- ``"bn"``: ``BatchNorm2d``.
- ``"gn"``: ``GroupNorm(min(gn_groups, C), C, affine=True)``.
- ``"cn"``: Continual Normalization (Pham et al., ICLR 2022): ``GroupNorm(min(gn_groups, C), C,
  affine=False)`` followed by ``BatchNorm2d(C)`` (affine, running statistics, momentum 0.1).

The number of groups is ``min(gn_groups, channels)`` so that narrow test widths (4, 8, ...) work;
at the reference width 64 every layer has at least 64 channels, so it is exactly ``gn_groups``.

ReLUs are *not* in-place: CKA hooks read the norm layers' outputs, which an in-place ReLU would
overwrite (a defect of the reference code).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "BLOCK_MULTIPLIERS",
    "EMBEDDING_POINTS",
    "N_BLOCKS",
    "NORM_LAYERS",
    "CNN14",
    "ContinualNorm",
    "ModelSettings",
    "count_trainable_parameters",
    "make_norm",
    "record_activations",
    "set_frozen_blocks",
]

logger = logging.getLogger(__name__)

N_BLOCKS = 6
#: Channel multipliers of the six conv blocks relative to ``ModelSettings.width``.
BLOCK_MULTIPLIERS: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
#: Where :meth:`CNN14.features` hands out an activation ``(batch, C_b, T_b, F_b)``: blocks 1-5's
#: outputs after their pooling, before the dropout that follows each (``block1`` .. ``block5``),
#: and the last block's output before or after its dropout (``before_dropout``, ``after_dropout``:
#: the embedding that the pooling and the classifier see). In eval mode a dropout changes
#: nothing, so the points before and after one are equal there.
EMBEDDING_POINTS: tuple[str, ...] = (*(f"block{b}" for b in range(1, N_BLOCKS)), "before_dropout", "after_dropout")


#: The memory layout of conv weights and activations in training and testing: NHWC (channels
#: last). oneDNN's convolutions ran faster in it than in NCHW here (width-8 CNN14, 1 thread: the
#: backward pass 2.1x, a BatchNorm training step 1.4x, a test forward pass 1.4x); the numbers are
#: the same to float precision, and a checkpoint loads into a model of either layout.
MEMORY_FORMAT = torch.channels_last


def _n_groups(channels: int, gn_groups: int) -> int:
    """Groups used by GroupNorm over ``channels`` channels: ``min(gn_groups, channels)``."""
    return min(gn_groups, channels)


class ContinualNorm(nn.Module):
    """Continual Normalization: non-affine GroupNorm followed by an affine BatchNorm2d.

    Input and output ``(batch, channels, time, freq)``.
    """

    def __init__(self, channels: int, *, groups: int, momentum: float = 0.1) -> None:
        super().__init__()
        self.gn = nn.GroupNorm(groups, channels, affine=False)
        self.bn = nn.BatchNorm2d(channels, affine=True, track_running_stats=True, momentum=momentum)

    def forward(self, x: Tensor) -> Tensor:  # (batch, C, T, F) -> (batch, C, T, F)
        return self.bn(self.gn(x))


def _make_bn(channels: int, groups: int) -> nn.Module:
    return nn.BatchNorm2d(channels)


def _make_gn(channels: int, groups: int) -> nn.Module:
    return nn.GroupNorm(groups, channels, affine=True)


def _make_cn(channels: int, groups: int) -> nn.Module:
    return ContinualNorm(channels, groups=groups)


#: Registry of block normalisation layers: name -> factory(channels, groups).
NORM_LAYERS: dict[str, Callable[[int, int], nn.Module]] = {
    "bn": _make_bn,
    "gn": _make_gn,
    "cn": _make_cn,
}


def make_norm(name: str, channels: int, *, gn_groups: int = 32) -> nn.Module:
    """Build the normalisation layer ``name`` for ``channels`` channels (groups = min(gn_groups, C))."""
    if name not in NORM_LAYERS:
        raise ValueError(f"unknown norm {name!r}; allowed: {sorted(NORM_LAYERS)}")
    return NORM_LAYERS[name](channels, _n_groups(channels, gn_groups))


@dataclass(frozen=True, kw_only=True)
class ModelSettings:
    """Hyper-parameters of :class:`CNN14`.

    Attributes:
        norm: normalisation inside the conv blocks, one of ``"bn"``, ``"gn"``, ``"cn"``.
        width: channels of block 1; the blocks have ``width * (1, 2, 4, 8, 16, 32)`` channels
            (64 gives the reference 64 ... 2048).
        n_mels: number of mel bins of the input (channels of ``bn0``).
        n_classes: number of classifier outputs (classes seen so far).
        dropout: dropout probability after each block in training.
        gn_groups: GroupNorm groups (``"gn"`` and ``"cn"``); a layer with C channels uses
            ``min(gn_groups, C)`` groups, which must divide C.
        expansion: 0 (the papers' network), or the width of a fixed random expansion layer
            ``relu(h @ E)`` between the pooling and the classifier (the analytic classifier's
            buffer layer, :meth:`CNN14.add_expansion`; never trained).
    """

    norm: str
    width: int = 64
    n_mels: int = 64
    n_classes: int
    dropout: float = 0.2
    gn_groups: int = 32
    expansion: int = 0

    def __post_init__(self) -> None:
        if self.norm not in NORM_LAYERS:
            raise ValueError(f"unknown norm {self.norm!r}; allowed: {sorted(NORM_LAYERS)}")
        for name in ("width", "n_mels", "n_classes", "gn_groups"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if isinstance(self.expansion, bool) or not isinstance(self.expansion, int) or self.expansion < 0:
            raise ValueError(f"expansion must be a non-negative integer, got {self.expansion!r}")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)):
            raise ValueError(f"dropout must be a number in [0, 1), got {self.dropout!r}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if self.norm in ("gn", "cn"):
            for channels in self.block_channels:
                groups = _n_groups(channels, self.gn_groups)
                if channels % groups:
                    raise ValueError(
                        f"GroupNorm needs channels divisible by groups: {channels} channels, "
                        f"{groups} groups (width={self.width}, gn_groups={self.gn_groups})"
                    )

    @property
    def block_channels(self) -> tuple[int, ...]:
        """Output channels of blocks 1..6."""
        return tuple(self.width * m for m in BLOCK_MULTIPLIERS)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the fields (YAML/JSON friendly)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSettings:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown ModelSettings keys {sorted(unknown)}; allowed: {sorted(names)}")
        return cls(**data)


def _conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1, bias=False)


class ConvBlock(nn.Module):
    """``conv1 -> norm1 -> ReLU -> conv2 -> norm2 -> ReLU -> avg_pool 2x2``."""

    def __init__(self, in_channels: int, out_channels: int, *, norm: str, gn_groups: int) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_channels, out_channels)
        self.norm1 = make_norm(norm, out_channels, gn_groups=gn_groups)
        self.conv2 = _conv3x3(out_channels, out_channels)
        self.norm2 = make_norm(norm, out_channels, gn_groups=gn_groups)

    def forward(self, x: Tensor) -> Tensor:  # (batch, C_in, T, F) -> (batch, C_out, T//2, F//2)
        x = F.relu(self.norm1(self.conv1(x)))  # non-inplace: hooks keep the pre-ReLU output
        x = F.relu(self.norm2(self.conv2(x)))
        return F.avg_pool2d(x, kernel_size=(2, 2), ceil_mode=False)


def _init_norm(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) and m.weight is not None:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class CNN14(nn.Module):
    """CNN14 without ``fc1``: log-mel ``(batch, time, mel)`` -> ``(logits, embedding)``.

    The time axis must have at least 64 frames (six halvings); 1-s clips (101 frames) and 10-s
    clips (1001 frames) both work.
    """

    def __init__(self, settings: ModelSettings) -> None:
        super().__init__()
        self.settings = settings
        self.bn0 = nn.BatchNorm2d(settings.n_mels)
        channels = settings.block_channels
        in_ch = 1
        for b, out_ch in enumerate(channels, start=1):
            self.add_module(
                f"block{b}", ConvBlock(in_ch, out_ch, norm=settings.norm, gn_groups=settings.gn_groups)
            )
            in_ch = out_ch
        if settings.expansion:
            # filled by add_expansion (or a checkpoint); a buffer, so no optimiser touches it
            self.register_buffer("expansion", torch.zeros(channels[-1], settings.expansion))
        self.classifier = nn.Linear(settings.expansion or channels[-1], settings.n_classes)
        # Blocks whose BatchNorm layers stay in eval mode (see set_frozen_blocks).
        self._stat_frozen_blocks: tuple[int, ...] = ()
        self._init_weights()

    def _init_weights(self) -> None:
        _init_norm(self.bn0)
        for block in self.blocks():
            nn.init.xavier_uniform_(block.conv1.weight)
            nn.init.xavier_uniform_(block.conv2.weight)
            _init_norm(block)
        # classifier: PyTorch's default nn.Linear init (kept as constructed)

    def blocks(self) -> list[ConvBlock]:
        """The six conv blocks in network order."""
        return [getattr(self, f"block{b}") for b in range(1, N_BLOCKS + 1)]

    @property
    def n_classes(self) -> int:
        return self.classifier.out_features

    def forward(self, x: Tensor, *, embedding: str = "after_dropout") -> tuple[Tensor, Tensor]:
        """Return ``(logits (batch, n_classes), embedding (batch, C6, T', F'))``.

        The embedding is the last block's output after pooling, taken ``after_dropout`` (the
        default: the point every method uses, the reference model's; in training it carries the
        dropout mask that the classifier sees) or ``before_dropout``; any other point of
        ``EMBEDDING_POINTS`` works too (:meth:`features`).
        """
        logits, taken = self.features(x, (embedding,))
        return logits, taken[embedding]

    def features(self, x: Tensor, points: Sequence[str] = ()) -> tuple[Tensor, dict[str, Tensor]]:
        """One forward pass: ``(logits (batch, n_classes), {point: activation})`` for each of
        ``points`` (``EMBEDDING_POINTS``); the activations are the tensors the pass itself uses,
        so a loss on them trains the network below them."""
        unknown = [p for p in points if p not in EMBEDDING_POINTS]
        if unknown:
            raise ValueError(f"unknown embedding point(s) {unknown}; allowed: {list(EMBEDDING_POINTS)}")
        if x.dim() != 3 or x.shape[2] != self.settings.n_mels:
            raise ValueError(f"expected input (batch, time, {self.settings.n_mels}), got {tuple(x.shape)}")
        min_len = 2**N_BLOCKS
        if x.shape[1] < min_len or x.shape[2] < min_len:
            raise ValueError(f"input needs at least {min_len} frames and mel bins, got {tuple(x.shape)}")
        wanted = set(points)
        taken: dict[str, Tensor] = {}
        x = x.unsqueeze(1)  # (batch, 1, time, mel)
        x = self.bn0(x.transpose(1, 3)).transpose(1, 3)  # BN over mel bins: (batch, mel, time, 1)
        for b, block in enumerate(self.blocks(), start=1):
            x = block(x)  # (batch, C_b, T_b, F_b)
            before = f"block{b}" if b < N_BLOCKS else "before_dropout"
            if before in wanted:
                taken[before] = x
            x = F.dropout(x, p=self.settings.dropout, training=self.training)
            if b == N_BLOCKS and "after_dropout" in wanted:
                taken["after_dropout"] = x  # (batch, C6, T', F'), what the pooling and classifier see
        x = x.mean(dim=3)  # (batch, C6, T')
        x = x.max(dim=2).values + x.mean(dim=2)  # (batch, C6)
        if self.settings.expansion:
            x = F.relu(x @ self.expansion)  # (batch, expansion)
        logits = self.classifier(x)  # (batch, n_classes)
        return logits, {p: taken[p] for p in points}

    def add_expansion(self, size: int, *, seed: int) -> None:
        """Insert a fixed random expansion layer ``relu(h @ E)`` of ``size`` units between the
        pooled embedding ``h`` and the classifier (ACIL's buffer layer): ``E`` uniform in
        ``+-1/sqrt(C6)`` (``nn.Linear``'s initialisation, no bias) from ``seed``. The classifier
        becomes a new ``(size -> n_classes)`` layer, to be set by the caller."""
        if self.settings.expansion:
            raise ValueError("the model already has an expansion layer")
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"size must be a positive integer, got {size!r}")
        old = self.classifier
        d = old.in_features
        gen = torch.Generator().manual_seed(seed)
        bound = 1.0 / d ** 0.5
        weight = (torch.rand(d, size, generator=gen, dtype=torch.float32) * 2 - 1) * bound
        self.register_buffer("expansion", weight.to(old.weight.device))
        self.classifier = nn.Linear(size, old.out_features, device=old.weight.device, dtype=old.weight.dtype)
        self.settings = dataclasses.replace(self.settings, expansion=size)

    def grow_classifier(self, n_new: int) -> None:
        """Append ``n_new`` output rows; old rows and biases are copied exactly.

        New rows get ``nn.Linear``'s default init. The classifier is a new module: build the
        optimiser after growing.
        """
        if isinstance(n_new, bool) or not isinstance(n_new, int) or n_new < 1:
            raise ValueError(f"n_new must be a positive integer, got {n_new!r}")
        old = self.classifier
        new = nn.Linear(
            old.in_features, old.out_features + n_new, device=old.weight.device, dtype=old.weight.dtype
        )
        with torch.no_grad():
            new.weight[: old.out_features].copy_(old.weight)
            new.bias[: old.out_features].copy_(old.bias)
        new.weight.requires_grad_(old.weight.requires_grad)
        new.bias.requires_grad_(old.bias.requires_grad)
        self.classifier = new
        self.settings = dataclasses.replace(self.settings, n_classes=new.out_features)

    def layer_names(self) -> list[str]:
        """The 25 CKA layers in network order: ``block{b}.conv1/norm1/conv2/norm2``, ``classifier``."""
        names = [
            f"block{b}.{part}" for b in range(1, N_BLOCKS + 1) for part in ("conv1", "norm1", "conv2", "norm2")
        ]
        return names + ["classifier"]

    def layer_modules(self) -> dict[str, nn.Module]:
        """``{name: module}`` for :meth:`layer_names`, in the same order."""
        return {name: self.get_submodule(name) for name in self.layer_names()}

    def train(self, mode: bool = True) -> CNN14:
        """Like ``nn.Module.train`` but keeps stat-frozen blocks' BatchNorm layers in eval mode."""
        super().train(mode)
        for b in self._stat_frozen_blocks:
            for m in getattr(self, f"block{b}").modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self


@contextlib.contextmanager
def record_activations(model: CNN14, *, detach: bool = True) -> Iterator[dict[str, Tensor]]:
    """Record the outputs of the 25 CKA layers during forward passes inside the block.

    Yields a dict ``{layer name: output}`` that each forward pass overwrites (the most recent
    pass wins). Conv outputs are taken before the norm, norm outputs before the ReLU, the
    classifier output is the logits. Hooks are removed on exit.
    """
    store: dict[str, Tensor] = {}
    handles = []

    def make_hook(name: str) -> Callable[[nn.Module, Any, Tensor], None]:
        def hook(module: nn.Module, inputs: Any, output: Tensor) -> None:
            store[name] = output.detach() if detach else output

        return hook

    try:
        for name, module in model.layer_modules().items():
            handles.append(module.register_forward_hook(make_hook(name)))
        yield store
    finally:
        for h in handles:
            h.remove()


def count_trainable_parameters(model: nn.Module) -> int:
    """Number of parameter elements with ``requires_grad``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def set_frozen_blocks(model: CNN14, blocks: Sequence[int], *, freeze_norm_stats: bool) -> None:
    """Freeze conv blocks ``blocks`` (1-based) and unfreeze the other blocks.

    Declarative: after the call exactly the listed blocks have ``requires_grad=False`` (the
    other blocks get ``requires_grad=True``; ``bn0`` and the classifier are not touched). With
    ``freeze_norm_stats`` the listed blocks' BatchNorm layers (also the one inside Continual
    Normalization) stay in eval mode, so their running statistics do not move, also across
    ``model.train()``. ``requires_grad=False`` alone does not stop running statistics from moving.
    """
    chosen = tuple(sorted(set(blocks)))
    for b in chosen:
        if isinstance(b, bool) or not isinstance(b, int) or not 1 <= b <= N_BLOCKS:
            raise ValueError(f"block indices must be integers in 1..{N_BLOCKS}, got {list(blocks)!r}")
    for b in range(1, N_BLOCKS + 1):
        block = getattr(model, f"block{b}")
        block.requires_grad_(b not in chosen)
    model._stat_frozen_blocks = chosen if freeze_norm_stats else ()
    model.train(model.training)  # re-apply the mode so the BN eval override takes effect now
    logger.debug("frozen blocks %s (norm stats frozen: %s)", chosen, freeze_norm_stats)
