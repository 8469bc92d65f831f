"""PyTorch eager reference: the paper's models and one adversarial training step.

This is what a PyTorch user would write, used only as a speed baseline for
``bench_step.py``. The models mirror ``fosc_jax.models`` layer for layer (same widths,
kernel sizes, padding, biases, BatchNorm momentum 0.9 / eps 1e-5, input normalisation inside
the CIFAR models). Initialisers are PyTorch's defaults: they do not affect speed.

The step: PGD-K (random start, step eps/4, sign gradient, projection onto the eps-ball and
[0, 1], BatchNorm in train mode, gradient of the SUM of per-example cross-entropies), then one
SGD step (momentum 0.9, weight decay 1e-4) on the adversarial batch. The dynamic variant stops
each example once its FOSC ``eps * ||g||_1 - <x - x0, g>`` is <= c_t and breaks the Python
loop when no example is active (one host sync per step, as an eager user would write).

Two variants: ``"fp32"`` and ``"bf16_cl"`` (bfloat16 autocast + channels_last memory format).

Importing this module requires torch; ``bench_step.py`` checks for it first.
"""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

BN_MOMENTUM_TORCH: float = 0.1   # torch's momentum = 1 - flax's 0.9
BN_EPS: float = 1e-5
CIFAR10_MEAN: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
CIFAR10_STD: tuple[float, float, float] = (0.2470, 0.2435, 0.2616)
VARIANTS: tuple[str, ...] = ("fp32", "bf16_cl")
MODEL_NAMES: tuple[str, ...] = ("mnist_cnn", "mnist_cnn_valid", "cifar_cnn", "wrn34_10", "wrn16_1")


def _bn2d(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=BN_EPS, momentum=BN_MOMENTUM_TORCH)


class _Normalize(nn.Module):
    """Per-channel (x - mean) / std on NCHW inputs; constants, no parameters."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class MnistCNN(nn.Module):
    """conv32(3x3)-BN-ReLU-maxpool2, conv64(3x3)-BN-ReLU-maxpool2, dense128-ReLU, dense10.

    ``padding="same"`` matches ``get_model("mnist_cnn")`` (the released Keras code);
    ``"valid"`` matches ``get_model("mnist_cnn_valid")``.
    """

    def __init__(self, num_classes: int = 10, padding: str = "same") -> None:
        super().__init__()
        if padding not in ("same", "valid"):
            raise ValueError(f"MnistCNN: padding must be 'same' or 'valid', got {padding!r}.")
        side = 7 if padding == "same" else 5
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=padding), _bn2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=padding), _bn2d(64), nn.ReLU(), nn.MaxPool2d(2))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(64 * side * side, 128), nn.ReLU(),
                                  nn.Linear(128, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class CifarCNN(nn.Module):
    """[conv64, conv64], [conv128, conv128], [conv196, conv196] (3x3 SAME-BN-ReLU, maxpool 2
    after each pair), dense256-BN-ReLU, dense10; input normalised inside."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        layers: list[nn.Module] = [_Normalize(CIFAR10_MEAN, CIFAR10_STD)]
        c_in = 3
        for feats in (64, 128, 196):
            for _ in range(2):
                layers += [nn.Conv2d(c_in, feats, 3, padding=1), _bn2d(feats), nn.ReLU()]
                c_in = feats
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(196 * 4 * 4, 256),
                                  nn.BatchNorm1d(256, eps=BN_EPS, momentum=BN_MOMENTUM_TORCH),
                                  nn.ReLU(), nn.Linear(256, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class _WideBasic(nn.Module):
    """Pre-activation unit: BN-ReLU-conv3x3(stride)-BN-ReLU-conv3x3 plus shortcut (identity,
    or a 1x1 strided conv on the activated input when the shape changes)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.bn1, self.bn2 = _bn2d(c_in), _bn2d(c_out)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.project = (nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)
                        if c_in != c_out or stride != 1 else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = F.relu(self.bn1(x))
        shortcut = self.project(act) if self.project is not None else x
        y = self.conv2(F.relu(self.bn2(self.conv1(act))))
        return y + shortcut


class WideResNet(nn.Module):
    """WRN-depth-k (pre-activation): conv3x3(16), three stages of (depth-4)/6 units with widths
    16k/32k/64k (strides 1, 2, 2), BN-ReLU, global average pool, dense. Input normalised."""

    def __init__(self, depth: int = 34, widen_factor: int = 10, num_classes: int = 10) -> None:
        super().__init__()
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"WideResNet: depth must be 6n + 4, got {depth}.")
        units = (depth - 4) // 6
        layers: list[nn.Module] = [_Normalize(CIFAR10_MEAN, CIFAR10_STD),
                                   nn.Conv2d(3, 16, 3, padding=1, bias=False)]
        c_in = 16
        for stage, stride in enumerate((1, 2, 2)):
            width = 16 * 2**stage * widen_factor
            for unit in range(units):
                layers.append(_WideBasic(c_in, width, stride if unit == 0 else 1))
                c_in = width
        layers += [_bn2d(c_in), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                   nn.Linear(c_in, num_classes)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def build_model(name: str, num_classes: int = 10) -> nn.Module:
    """The PyTorch twin of ``fosc_jax.models.get_model(name)``."""
    if name == "mnist_cnn":
        return MnistCNN(num_classes, "same")
    if name == "mnist_cnn_valid":
        return MnistCNN(num_classes, "valid")
    if name == "cifar_cnn":
        return CifarCNN(num_classes)
    if name == "wrn34_10":
        return WideResNet(34, 10, num_classes)
    if name == "wrn16_1":
        return WideResNet(16, 1, num_classes)
    raise ValueError(f"build_model: unknown name {name!r}; accepted: {', '.join(MODEL_NAMES)}.")


def fosc(g: torch.Tensor, delta: torch.Tensor, eps: float) -> torch.Tensor:
    """Per-example FOSC ``eps * ||g||_1 - <delta, g>`` in float32, shape [B]."""
    g32, d32 = g.float().flatten(1), delta.float().flatten(1)
    return eps * g32.abs().sum(1) - (d32 * g32).sum(1)


@dataclasses.dataclass
class StepResult:
    """What one eager training step reports (host values: the dynamic loop syncs anyway)."""

    loss: torch.Tensor          # training loss on the adversarial batch (device scalar)
    steps: torch.Tensor         # attack steps each example took [B] (device)
    iterations: int             # full-batch gradient evaluations in the attack


class TorchAdvStep:
    """One model + SGD optimizer; ``step(x0, y, threshold)`` runs attack + update in eager mode.

    Args:
      name: model name (see ``build_model``).
      eps, step_size, num_steps: the L-inf attack (PGD-K, random start).
      variant: ``"fp32"`` or ``"bf16_cl"`` (bfloat16 autocast + channels_last).
      device: torch device string.
      lr, momentum, weight_decay: SGD settings (paper: 0.01, 0.9, 1e-4).
    """

    def __init__(self, name: str, *, eps: float, step_size: float, num_steps: int,
                 variant: str = "fp32", device: str = "cpu", lr: float = 0.01,
                 momentum: float = 0.9, weight_decay: float = 1e-4, seed: int = 0) -> None:
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}.")
        torch.manual_seed(seed)
        self.device = torch.device(device)
        self.variant = variant
        self.eps, self.step_size, self.num_steps = float(eps), float(step_size), int(num_steps)
        self.memory_format = (torch.channels_last if variant == "bf16_cl"
                              else torch.contiguous_format)
        self.model = build_model(name).to(self.device, memory_format=self.memory_format)
        self.model.train()
        self.opt = torch.optim.SGD(self.model.parameters(), lr=lr, momentum=momentum,
                                   weight_decay=weight_decay)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.variant == "bf16_cl":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def prepare(self, x_uint8_nhwc: np.ndarray,
                y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Host uint8 NHWC batch -> float [0, 1] NCHW tensor on the device, int64 labels."""
        x = torch.from_numpy(np.array(x_uint8_nhwc)).to(self.device)
        x = x.permute(0, 3, 1, 2).float().div_(255.0).contiguous(memory_format=self.memory_format)
        return x, torch.from_numpy(np.array(y)).to(self.device).long()

    def _grad(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = x.detach().requires_grad_(True)
        with self._autocast():
            logits = self.model(x)
        loss = F.cross_entropy(logits.float(), y, reduction="sum")
        (g,) = torch.autograd.grad(loss, x)
        return g

    def attack(self, x0: torch.Tensor, y: torch.Tensor,
               threshold: Optional[float] = None) -> tuple[torch.Tensor, torch.Tensor, int]:
        """PGD-K (``threshold=None``) or dynamic PGD; returns (x_adv, steps [B], iterations)."""
        eps, alpha = self.eps, self.step_size
        lower, upper = (x0 - eps).clamp_(min=0.0), (x0 + eps).clamp_(max=1.0)
        x = (x0 + torch.empty_like(x0).uniform_(-eps, eps)).clamp_(0.0, 1.0)
        batch = x0.shape[0]
        if threshold is None:
            for _ in range(self.num_steps):
                g = self._grad(x, y)
                x = torch.minimum(torch.maximum(x + alpha * g.sign(), lower), upper)
            return x.detach(), torch.full((batch,), self.num_steps, device=x.device), self.num_steps
        steps = torch.zeros(batch, dtype=torch.int32, device=x.device)
        active = torch.ones(batch, dtype=torch.bool, device=x.device)
        g = self._grad(x, y)
        iterations = 1
        for _ in range(self.num_steps):
            mask = active.view(-1, *([1] * (x.dim() - 1)))
            moved = torch.minimum(torch.maximum(x + alpha * g.sign(), lower), upper)
            x = torch.where(mask, moved, x)
            steps += active.int()
            g = self._grad(x, y)
            iterations += 1
            active &= fosc(g, x - x0, eps) > threshold
            if not bool(active.any()):
                break
        return x.detach(), steps, iterations

    def step(self, x0: torch.Tensor, y: torch.Tensor,
             threshold: Optional[float] = None) -> StepResult:
        """Attack, then one SGD step on the adversarial batch."""
        x_adv, steps, iterations = self.attack(x0, y, threshold)
        self.opt.zero_grad(set_to_none=True)
        with self._autocast():
            logits = self.model(x_adv)
        loss = F.cross_entropy(logits.float(), y)
        loss.backward()
        self.opt.step()
        return StepResult(loss=loss.detach(), steps=steps, iterations=iterations)

    def synchronize(self) -> None:
        """Wait for queued device work (CUDA); a no-op on CPU."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

