"""Drop-in ``nn.Conv2d`` / ``nn.Linear`` subclasses that avoid two slow CPU kernels the seed CNN's shapes hit.

Measured on a 2-core AMD EPYC (AVX2), one thread, fp32, batch 64 (``docs/performance.md`` has the step times):

* **Input convolution.** oneDNN's weight-gradient kernel for a convolution with one input channel (the seed CNN's
  1→64 3x3 conv over 28x28 images) is its slow path: 19 ms of a 38 ms training step. The same gradient as
  ``im2col`` columns times the output gradient (``bmm`` over the batch, then a sum) takes ~3 ms.
* **Linear layer with few outputs.** ``F.linear`` computes ``x @ W.T`` (``[64, 50176] @ [50176, 10]``): 2.5 ms. The
  transposed product ``(W @ x.T).T`` reads the same numbers in 1.7 ms, and its backward is no slower.

Together with fused Adam they take the seed CNN's training step from 28 ms to 17 ms. Parameters, initialisation and
state dicts are exactly those of the parent classes, so weights files are interchangeable, and LoRA adapts them as
the layers they subclass. Results differ from the parent classes by float rounding only (the same sums in another
order); the tests check the gradients against the parents' and by ``gradcheck``.

Each fast path is taken only where it was measured: on CPU, without autocast. Everywhere else these are the parent
classes.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F


def _cpu_fp32(x: Tensor) -> bool:
    return x.device.type == "cpu" and not torch.is_autocast_enabled("cpu")


class _WeightGradByMatmul(torch.autograd.Function):
    """``conv2d`` whose backward forms only the weight and bias gradients, as a batched matmul over im2col columns."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, stride, padding, dilation) -> Tensor:
        ctx.save_for_backward(x)
        ctx.conv = (weight.shape, stride, padding, dilation, bias is not None)
        return F.conv2d(x, weight, bias, stride, padding, dilation)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        (x,) = ctx.saved_tensors
        shape, stride, padding, dilation, has_bias = ctx.conv
        cols = F.unfold(x, shape[2:], dilation=dilation, padding=padding, stride=stride)  # [B, C_in*kh*kw, L]
        grad = grad_out.reshape(grad_out.shape[0], grad_out.shape[1], -1)  # [B, C_out, L]
        grad_weight = torch.bmm(grad, cols.transpose(1, 2)).sum(0).view(shape)
        grad_bias = grad.sum((0, 2)) if has_bias and ctx.needs_input_grad[2] else None
        return None, grad_weight, grad_bias, None, None, None


class InputConv2d(nn.Conv2d):
    """``nn.Conv2d`` for a network's input layer: a faster weight gradient on CPU (see the module docstring).

    The fast path needs an input that needs no gradient (the network's input: its gradient is never formed), a
    trainable weight, ``groups=1`` and zero padding. The forward pass is the same ``F.conv2d`` call either way.
    """

    def forward(self, x: Tensor) -> Tensor:
        if (
            _cpu_fp32(x)
            and torch.is_grad_enabled()
            and self.weight.requires_grad
            and not x.requires_grad
            and self.groups == 1
            and self.padding_mode == "zeros"
            and not isinstance(self.padding, str)
        ):
            return _WeightGradByMatmul.apply(x, self.weight, self.bias, self.stride, self.padding, self.dilation)
        return super().forward(x)


class FewOutputsLinear(nn.Linear):
    """``nn.Linear`` for a wide input and few outputs (a classifier head over flattened feature maps): on CPU it
    computes ``(W @ x.T).T`` instead of ``x @ W.T`` (see the module docstring)."""

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 2 or not _cpu_fp32(x):
            return super().forward(x)
        if self.bias is None:
            return (self.weight @ x.t()).t()
        return torch.addmm(self.bias.unsqueeze(1), self.weight, x.t()).t()
