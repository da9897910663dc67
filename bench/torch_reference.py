#!/usr/bin/env python
"""The PyTorch reference of issues 6 and 14, measured on this machine (``bench/throughput.py``).

The targets of issue 14 are ratios to "the widely used PyTorch port" of Real NVP
(chrischute/real-nvp) on the paper's CIFAR-10 model, float32, 2 threads.  This
module is an independent PyTorch implementation of that port's architecture, so
the reference can be timed in the same run as tfnvp instead of scaling figures
measured on another host:

* data pre-processing: dequantize ``y = (255 x + u) / 256``, ``u ~ U[0, 1)``,
  and the logit of ``alpha + (1 - 2 alpha) y`` with ``alpha = 0.05`` (paper,
  section 4.1), whose log-determinant is added to the flow's;
* 2 scales.  Scale 0 (3 x 32 x 32): 3 checkerboard couplings (masks
  alternating), squeeze, 3 channel-wise couplings (12 x 16 x 16), unsqueeze,
  then a squeeze in the alternate order and the split: half the channels (6 x
  16 x 16) leave as latents.  Scale 1 (6 x 16 x 16, the last): 4 checkerboard
  couplings;
* affine coupling (paper eq. 7-9): ``y_change = (x_change + t) * exp(s)`` with
  ``s = w * tanh(s_raw)`` (``w`` a weight-normalized per-channel scale); the
  checkerboard couplings multiply by the mask instead of splitting;
* ``s`` and ``t`` from one ResNet per coupling: batch norm of the input
  (doubled after the norm for checkerboard couplings), ``relu([x, -x])``, a 3x3
  weight-normalized conv to ``mid`` feature maps (64 at scale 0's checkerboard
  couplings, 128 for the others), 8 pre-activation residual blocks (BN, ReLU,
  3x3 conv, BN, ReLU, 3x3 conv) whose outputs are summed through 1x1 skip
  convs, then BN, ReLU and a 1x1 conv to ``2 C`` channels;
* loss: mean over the batch of ``-(log N(z; 0, I) + log|det| - D log 256)``
  (nats per image); Adam (lr 1e-3, L2 5e-5 on the weight-norm gains only) after
  clipping the gradient norm to 100, as the port's training script does.

``python bench/torch_reference.py`` prints the parameter count and the forward
conv FLOPs per image (19.6 M and 12.9 GFLOP in issue 6).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import parametrizations

ALPHA = 0.05  # Logit pre-processing: x -> logit(alpha + (1 - 2 alpha) x).
LEARNING_RATE = 1e-3
WEIGHT_NORM_GAIN_DECAY = 5e-5
MAX_GRAD_NORM = 100.0


def _wn_conv(cin: int, cout: int, kernel: int, bias: bool = True) -> nn.Conv2d:
    """A weight-normalized conv: ``W = g * V / ||V||`` per output channel."""
    return parametrizations.weight_norm(nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=bias))


class _Block(nn.Module):
    """Pre-activation residual block: ``x + conv(relu(bn(conv(relu(bn(x))))))``."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(), _wn_conv(channels, channels, 3, bias=False),
                                  nn.BatchNorm2d(channels), nn.ReLU(), _wn_conv(channels, channels, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class _STNet(nn.Module):
    """The coupling's conditioner: ``2 C`` output channels (``s_raw`` and ``t``)."""

    def __init__(self, channels: int, mid: int, blocks: int, double_input: bool):
        super().__init__()
        self.double_input = double_input
        self.in_norm = nn.BatchNorm2d(channels)
        self.in_conv = _wn_conv(2 * channels, mid, 3)
        self.in_skip = _wn_conv(mid, mid, 1)
        self.blocks = nn.ModuleList(_Block(mid) for _ in range(blocks))
        self.skips = nn.ModuleList(_wn_conv(mid, mid, 1) for _ in range(blocks))
        self.head = nn.Sequential(nn.BatchNorm2d(mid), nn.ReLU(), _wn_conv(mid, 2 * channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.in_norm(x) * (2.0 if self.double_input else 1.0)
        x = self.in_conv(F.relu(torch.cat([x, -x], dim=1)))
        total = self.in_skip(x)
        for block, skip in zip(self.blocks, self.skips):
            x = block(x)
            total = total + skip(x)
        return self.head(total)


class _Rescale(nn.Module):
    """Per-channel learned scale of ``tanh(s_raw)`` (weight-normalized, as in the port)."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight * x


class Coupling(nn.Module):
    """Affine coupling (paper eq. 7-9) with a checkerboard or channel-wise mask.

    ``forward`` maps data to latents (the paper's f) and accumulates
    ``log|det| = sum s`` over the changed units; ``inverse`` undoes it.
    """

    def __init__(self, channels: int, mid: int, blocks: int, checkerboard: bool, flip: bool):
        super().__init__()
        self.checkerboard, self.flip = checkerboard, flip
        width = channels if checkerboard else channels // 2
        self.net = _STNet(width, mid, blocks, double_input=checkerboard)
        self.rescale = parametrizations.weight_norm(_Rescale(width))

    def _mask(self, x: torch.Tensor) -> torch.Tensor:
        """1 on the conditioning pixels: ``(i + j) % 2 == 1``, or ``== 0`` when flipped."""
        i = torch.arange(x.shape[2], device=x.device).view(-1, 1)
        j = torch.arange(x.shape[3], device=x.device).view(1, -1)
        mask = ((i + j) % 2 != int(self.flip)).to(x.dtype)
        return mask.view(1, 1, *mask.shape)

    def _scale_shift(self, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s, t = self.net(cond).chunk(2, dim=1)
        s = self.rescale(torch.tanh(s))
        if not torch.isfinite(s).all():  # The port checks its scale factors too.
            raise RuntimeError("non-finite scale factors in a coupling")
        return s, t

    def forward(self, x: torch.Tensor, logdet: torch.Tensor):
        if self.checkerboard:
            b = self._mask(x)
            s, t = self._scale_shift(x * b)
            s, t = s * (1 - b), t * (1 - b)
            return (x + t) * torch.exp(s), logdet + s.flatten(1).sum(1)
        keep, change = self._halves(x)
        s, t = self._scale_shift(keep)
        return self._join(keep, (change + t) * torch.exp(s)), logdet + s.flatten(1).sum(1)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        if self.checkerboard:
            b = self._mask(y)
            s, t = self._scale_shift(y * b)
            return y * torch.exp(-s * (1 - b)) - t * (1 - b)
        keep, change = self._halves(y)
        s, t = self._scale_shift(keep)
        return self._join(keep, change * torch.exp(-s) - t)

    def _halves(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(conditioning half, changed half) of the channels."""
        first, second = x.chunk(2, dim=1)
        return (first, second) if self.flip else (second, first)

    def _join(self, keep: torch.Tensor, change: torch.Tensor) -> torch.Tensor:
        return torch.cat([keep, change] if self.flip else [change, keep], dim=1)


def squeeze(x: torch.Tensor) -> torch.Tensor:
    """Space-to-depth, 2x2 blocks: ``C x H x W -> 4C x H/2 x W/2`` (paper fig. 3)."""
    return F.pixel_unshuffle(x, 2)


def unsqueeze(x: torch.Tensor) -> torch.Tensor:
    return F.pixel_shuffle(x, 2)


def _alternate_squeeze_kernel(channels: int, like: torch.Tensor) -> torch.Tensor:
    """Stride-2 conv kernel ``[4C, C, 2, 2]`` of the port's second squeeze order.

    Output channel ``k * C + c`` takes position ``(0,0), (1,1), (0,1), (1,0)``
    for ``k = 0..3`` of input channel ``c`` (the port implements this squeeze
    as a permutation convolution; so does this reference, to cost the same).
    """
    kernel = torch.zeros(4 * channels, channels, 2, 2, dtype=like.dtype, device=like.device)
    for k, (i, j) in enumerate([(0, 0), (1, 1), (0, 1), (1, 0)]):
        for c in range(channels):
            kernel[k * channels + c, c, i, j] = 1.0
    return kernel


def alternate_squeeze(x: torch.Tensor) -> torch.Tensor:
    return F.conv2d(x, _alternate_squeeze_kernel(x.shape[1], x), stride=2)


def alternate_unsqueeze(x: torch.Tensor) -> torch.Tensor:
    return F.conv_transpose2d(x, _alternate_squeeze_kernel(x.shape[1] // 4, x), stride=2)


class _Scale(nn.Module):
    """One scale: checkerboard couplings, then (unless last) squeeze, channel-wise
    couplings, alternate squeeze, split; the kept half goes to the next scale."""

    def __init__(self, index: int, num_scales: int, channels: int, mid: int, blocks: int):
        super().__init__()
        last = index == num_scales - 1
        self.checker = nn.ModuleList(Coupling(channels, mid, blocks, True, flip=bool(k % 2))
                                     for k in range(4 if last else 3))
        self.channel = nn.ModuleList(Coupling(4 * channels, 2 * mid, blocks, False, flip=bool(k % 2))
                                     for k in range(0 if last else 3))
        self.next = None if last else _Scale(index + 1, num_scales, 2 * channels, 2 * mid, blocks)

    def forward(self, x: torch.Tensor, logdet: torch.Tensor):
        for coupling in self.checker:
            x, logdet = coupling(x, logdet)
        if self.next is None:
            return x, logdet
        x = squeeze(x)
        for coupling in self.channel:
            x, logdet = coupling(x, logdet)
        kept, out = alternate_squeeze(unsqueeze(x)).chunk(2, dim=1)
        kept, logdet = self.next(kept, logdet)
        return alternate_unsqueeze(torch.cat([kept, out], dim=1)), logdet

    def inverse(self, z: torch.Tensor) -> torch.Tensor:
        if self.next is not None:
            kept, out = alternate_squeeze(z).chunk(2, dim=1)
            x = squeeze(alternate_unsqueeze(torch.cat([self.next.inverse(kept), out], dim=1)))
            for coupling in reversed(self.channel):
                x = coupling.inverse(x)
            z = unsqueeze(x)
        for coupling in reversed(self.checker):
            z = coupling.inverse(z)
        return z


class RealNVP(nn.Module):
    """The port's CIFAR-10 model: 2 scales, 64 feature maps, 8 residual blocks."""

    def __init__(self, channels: int = 3, num_scales: int = 2, mid: int = 64, blocks: int = 8):
        super().__init__()
        self.flow = _Scale(0, num_scales, channels, mid, blocks)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) in nats per image of pixel values ``x`` in [0, 1] (discrete, 256 levels)."""
        if x.min() < 0 or x.max() > 1:
            raise ValueError("expected pixel values in [0, 1]")
        y = (x * 255.0 + torch.rand_like(x)) / 256.0
        y = ALPHA + (1 - 2 * ALPHA) * y
        logits = torch.log(y) - torch.log1p(-y)
        # d logit(y) / dy = 1 / (y (1 - y)), times (1 - 2 alpha).
        logdet = (F.softplus(logits) + F.softplus(-logits)).flatten(1).sum(1) \
            + logits[0].numel() * math.log(1 - 2 * ALPHA)
        z, logdet = self.flow(logits, logdet)
        prior = -0.5 * (z ** 2 + math.log(2 * math.pi))
        return prior.flatten(1).sum(1) + logdet - z[0].numel() * math.log(256.0)

    def sample(self, n: int, image_shape=(3, 32, 32)) -> torch.Tensor:
        """``n`` images in [0, 1]: ``sigmoid(f^-1(z))``, ``z ~ N(0, I)`` (as the port samples)."""
        z = torch.randn(n, *image_shape)
        return torch.sigmoid(self.flow.inverse(z))


def optimizer(model: RealNVP) -> torch.optim.Adam:
    """Adam; L2 only on the weight-norm gains (``original0``), as the port's script."""
    gains = [p for name, p in model.named_parameters() if name.endswith("original0")]
    others = [p for name, p in model.named_parameters() if not name.endswith("original0")]
    return torch.optim.Adam([dict(params=gains, weight_decay=WEIGHT_NORM_GAIN_DECAY),
                             dict(params=others, weight_decay=0.0)], lr=LEARNING_RATE)


def train_step_fn(model: RealNVP):
    """One training step (batch statistics): mean NLL, backprop, clip, Adam."""
    model.train()
    opt = optimizer(model)

    def step(x: torch.Tensor) -> float:
        opt.zero_grad(set_to_none=True)
        loss = -model.log_prob(x).mean()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
        opt.step()
        return loss.item()

    return step


def log_prob_fn(model: RealNVP):
    """Evaluation-mode log-likelihood (running statistics), no autograd."""
    model.eval()

    def log_prob(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model.log_prob(x)

    return log_prob


def sample_fn(model: RealNVP):
    model.eval()

    def sample(n: int) -> torch.Tensor:
        with torch.no_grad():
            return model.sample(n)

    return sample


def count(model: RealNVP) -> dict:
    """Trainable parameters and forward conv FLOPs per image (2 x conv MACs)."""
    from torch.utils.flop_counter import FlopCounterMode

    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    model.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model.log_prob(torch.rand(1, 3, 32, 32))
    flops = counter.get_flop_counts()["Global"]
    convs = {str(op): n for op, n in flops.items() if "convolution" in str(op)}
    return dict(params=params, conv_flops_per_image=sum(convs.values()),
                flops_per_image=sum(flops.values()))


def main() -> None:
    torch.manual_seed(0)
    info = count(RealNVP())
    print(f"PyTorch reference: {info['params'] / 1e6:.2f} M parameters, "
          f"{info['conv_flops_per_image'] / 1e9:.2f} GFLOP/image forward (conv, 2 x MACs); "
          f"issue 6: 19.6 M, 12.9 GFLOP")


if __name__ == "__main__":
    main()
