"""medseg's fast Swin UNETR against MONAI's own: same state_dict, same outputs, same gradients."""

import pytest
import torch
import torch.nn.functional as F
from monai.networks.nets import SwinUNETR as MonaiSwinUNETR
from monai.networks.nets import swin_unetr as monai_swin

from medseg.nets import SwinUNETR, fast_swin


def _pair(feature_size=12, **kwargs):
    torch.manual_seed(0)
    stock = MonaiSwinUNETR(in_channels=4, out_channels=3, feature_size=feature_size, **kwargs)
    with torch.no_grad():  # a trained-looking bias table, not MONAI's near-zero initialisation
        for module in stock.modules():
            if isinstance(module, monai_swin.WindowAttention):
                module.relative_position_bias_table.normal_(0, 1)
    fast = SwinUNETR(in_channels=4, out_channels=3, feature_size=feature_size, **kwargs)
    fast.load_state_dict(stock.state_dict())
    return stock, fast


def test_state_dict_is_monais():
    stock, fast = _pair()
    assert list(fast.state_dict()) == list(stock.state_dict())
    MonaiSwinUNETR(in_channels=4, out_channels=3, feature_size=12).load_state_dict(fast.state_dict())
    assert isinstance(fast.swinViT.layers1[0].blocks[0].attn, fast_swin.WindowAttention)
    assert not isinstance(
        SwinUNETR(in_channels=4, out_channels=3, feature_size=12, fast=False).swinViT.layers1[0],
        fast_swin.BasicLayer,
    )


@pytest.mark.parametrize("shape", [(1, 4, 64, 64, 64), (2, 4, 64, 96, 32)])
def test_forward_equals_monai(shape):
    stock, fast = _pair()
    stock.eval(), fast.eval()
    x = torch.randn(shape)
    with torch.inference_mode():
        expected, got = stock(x), fast(x)
    assert (got - expected).abs().max() < 1e-4
    with torch.no_grad():  # no_grad, not inference_mode: the same kernels
        assert (fast(x) - expected).abs().max() < 1e-4


@pytest.mark.parametrize("shifted", [False, True])
def test_window_attention_gradients_equal_monais(shifted):
    torch.manual_seed(0)
    stock = monai_swin.WindowAttention(24, 3, (7, 7, 7), qkv_bias=True)
    torch.nn.init.normal_(stock.relative_position_bias_table, std=1.0)
    fast = monai_swin.WindowAttention(24, 3, (7, 7, 7), qkv_bias=True)
    fast.load_state_dict(stock.state_dict())
    fast_swin.accelerate(fast)
    fast.budget = 3 * 343 * 343 * 3  # three windows a chunk: several chunks per batch item
    mask = monai_swin.compute_mask([14, 14, 14], (7, 7, 7), (3, 3, 3), "cpu") if shifted else None
    x = torch.randn(2 * 8, 343, 24, requires_grad=True)  # batch 2 x 8 windows
    weight = torch.randn(2 * 8, 343, 24)
    results = []
    for net in (stock, fast):
        x.grad = None
        out = net(x, mask)
        (out * weight).sum().backward()
        results.append(
            (
                out.detach(),
                x.grad.clone(),
                {n: p.grad.clone() for n, p in net.named_parameters()},
            )
        )
    (out_s, dx_s, grads_s), (out_f, dx_f, grads_f) = results
    assert (out_f - out_s).abs().max() < 1e-5
    assert (dx_f - dx_s).abs().max() < 1e-5 * dx_s.abs().max()
    for name, grad in grads_s.items():
        assert (grads_f[name] - grad).abs().max() < 1e-5 * grad.abs().max(), name


@pytest.mark.slow
def test_network_gradients_match_monai_within_float_rounding():
    """Relative L2 error of all parameter gradients against a float64 MONAI reference,
    next to MONAI's own float32 error."""
    stock, fast = _pair()
    reference = MonaiSwinUNETR(in_channels=4, out_channels=3, feature_size=12).double()
    reference.load_state_dict(stock.state_dict())
    x = torch.randn(1, 4, 64, 64, 64)
    y = (torch.rand(1, 3, 64, 64, 64) > 0.5).float()

    def grads(net, dtype):
        out = net(x.to(dtype))
        F.binary_cross_entropy_with_logits(out, y.to(dtype)).backward()
        return torch.cat([p.grad.double().flatten() for p in net.parameters()])

    exact = grads(reference, torch.float64)
    err_fast = (grads(fast, torch.float32) - exact).norm() / exact.norm()
    err_stock = (grads(stock, torch.float32) - exact).norm() / exact.norm()
    assert err_fast < 1e-3, (err_fast, err_stock)


@pytest.mark.parametrize("kernel,size", [(3, 32), (1, 32), (3, 16), (3, 64)])
def test_conv3d_paths_equal_pytorch(kernel, size):
    torch.manual_seed(0)
    conv = torch.nn.Conv3d(12, 12, kernel, padding=kernel // 2)
    fast = torch.nn.Conv3d(12, 12, kernel, padding=kernel // 2)
    fast.load_state_dict(conv.state_dict())
    fast_swin.accelerate(fast)
    x = torch.randn(1, 12, size, size, size, requires_grad=True)
    g = torch.randn(1, 12, size, size, size)
    conv(x).backward(g)
    dx, dw = x.grad.clone(), conv.weight.grad.clone()
    x.grad = None
    y = fast(x)
    y.backward(g)
    assert (y - conv(x)).abs().max() < 1e-4
    assert (x.grad - dx).abs().max() < 1e-4 * dx.abs().max()
    assert (fast.weight.grad - dw).abs().max() < 1e-4 * dw.abs().max()
    with torch.inference_mode():
        assert (fast(x) - conv(x)).abs().max() < 1e-4


@pytest.mark.slow
def test_export_trace_runs_monais_code():
    _, fast = _pair()
    fast.eval()
    x = torch.randn(1, 4, 64, 64, 64)
    with torch.no_grad():
        traced = torch.jit.trace(fast, x)
        assert (traced(x) - fast(x)).abs().max() < 1e-4
    assert "mkldnn_convolution" not in str(traced.inlined_graph)
    assert "flash_attention" not in str(traced.inlined_graph)


def test_gradient_checkpointing_gives_the_same_gradients():
    """MONAI's use_checkpoint recomputes each block in backward: the fast attention's backward runs inside it."""
    _, fast = _pair()
    checkpointed = SwinUNETR(in_channels=4, out_channels=3, feature_size=12, use_checkpoint=True)
    checkpointed.load_state_dict(fast.state_dict())
    x = torch.randn(1, 4, 64, 64, 64)
    grads = []
    for net in (fast, checkpointed):
        net(x).square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in net.parameters()]))
    assert torch.equal(grads[0], grads[1])
