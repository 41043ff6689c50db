"""fast_layers: InputConv2d (weight gradient as im2col columns times the output gradient) and FewOutputsLinear
((W @ x.T).T): the parents' numbers up to float rounding, the parents' weights, adapted by LoRA as the parents."""

import pytest
import torch
from torch import nn

from prefalign.models import LoRA, SeedCNN
from prefalign.models.fast_layers import FewOutputsLinear, InputConv2d, _WeightGradByMatmul
from prefalign.models.lora import LoRAConv2d, LoRALinear

SHAPES = [
    dict(in_channels=1, out_channels=8, kernel_size=3, padding=1),  # the seed CNN's layer
    dict(in_channels=1, out_channels=6, kernel_size=5, padding=2, bias=False),
    dict(in_channels=3, out_channels=4, kernel_size=(3, 2), stride=2, padding=(1, 0), dilation=(1, 2)),
]


def _pair(kw, dtype=torch.float32):
    torch.manual_seed(0)
    fast = InputConv2d(**kw).to(dtype)
    plain = nn.Conv2d(**kw).to(dtype)
    plain.load_state_dict(fast.state_dict())
    return fast, plain


@pytest.mark.parametrize("kw", SHAPES)
def test_same_outputs_and_gradients_as_conv2d(kw):
    fast, plain = _pair(kw)
    x = torch.randn(5, kw["in_channels"], 11, 13)
    target = torch.randn_like(plain(x))
    for m in (fast, plain):
        ((m(x) - target) ** 2).mean().backward()
    assert torch.equal(fast(x), plain(x))  # the forward is the same conv2d call
    # Float rounding only: the same sums in another order (gradcheck below checks the formula itself).
    torch.testing.assert_close(fast.weight.grad, plain.weight.grad, rtol=1e-4, atol=1e-6)
    if plain.bias is not None:
        torch.testing.assert_close(fast.bias.grad, plain.bias.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("kw", SHAPES)
def test_gradcheck_in_double(kw):
    torch.manual_seed(0)
    conv = InputConv2d(**kw).double()
    x = torch.randn(2, kw["in_channels"], 7, 8, dtype=torch.double)
    bias = conv.bias.detach().clone().requires_grad_() if conv.bias is not None else None
    weight = conv.weight.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda w, b: _WeightGradByMatmul.apply(x, w, b, conv.stride, conv.padding, conv.dilation), (weight, bias)
    )


def test_fast_path_only_where_it_applies(monkeypatch):
    calls = []
    original = _WeightGradByMatmul.apply
    monkeypatch.setattr(_WeightGradByMatmul, "apply", lambda *a: calls.append(1) or original(*a))
    conv = InputConv2d(1, 4, 3, padding=1)
    x = torch.randn(2, 1, 6, 6)
    conv(x)
    assert len(calls) == 1
    with torch.no_grad():
        conv(x)  # inference: plain conv
    conv(x.requires_grad_())  # an input that needs its gradient: oneDNN's backward forms it
    conv.requires_grad_(False)
    conv(x.detach())  # frozen (a LoRA base): nothing to differentiate
    assert len(calls) == 1
    # The input gradient flows through the fallback unchanged.
    conv.requires_grad_(True)
    x = torch.randn(2, 1, 6, 6, requires_grad=True)
    conv(x).sum().backward()
    assert x.grad is not None and conv.weight.grad is not None


def test_seed_cnn_weights_and_lora_are_unchanged():
    model = SeedCNN(channels=4)
    assert isinstance(model.conv1, InputConv2d) and isinstance(model.conv1, nn.Conv2d)
    assert isinstance(model.fc, FewOutputsLinear) and isinstance(model.fc, nn.Linear)
    assert list(model.state_dict()) == ["conv1.weight", "conv1.bias", "fc.weight", "fc.bias"]
    adapted = LoRA(SeedCNN(channels=4), rank=2)
    assert isinstance(adapted.model.conv1, LoRAConv2d)  # adapted like any Conv2d
    assert isinstance(adapted.model.fc, LoRALinear)
    x = torch.rand(3, 1, 28, 28)
    adapted(x).sum().backward()  # frozen base, trainable adapters: the plain path
    assert adapted.model.conv1.lora_A.weight.grad is not None


@pytest.mark.parametrize("bias", [True, False])
def test_few_outputs_linear_matches_linear(bias):
    torch.manual_seed(0)
    fast = FewOutputsLinear(300, 7, bias=bias)
    plain = nn.Linear(300, 7, bias=bias)
    plain.load_state_dict(fast.state_dict())
    x = torch.randn(9, 300, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    target = torch.randn(9, 7)
    out = fast(x)
    ((out - target) ** 2).mean().backward()
    ((plain(x2) - target) ** 2).mean().backward()
    torch.testing.assert_close(out, plain(x2), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-4, atol=1e-7)
    for a, b in zip(fast.parameters(), plain.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-7)
    assert fast(torch.randn(2, 3, 300)).shape == (2, 3, 7)  # other ranks: nn.Linear's path
    double = FewOutputsLinear(6, 2, bias=bias).double()
    assert torch.autograd.gradcheck(double, (torch.randn(3, 6, dtype=torch.double, requires_grad=True),))
