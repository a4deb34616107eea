"""Faster forward and backward for MONAI's Swin UNETR, with MONAI's modules, parameters and state_dict.

Swin UNETR at the sizes medseg trains and tests (feature_size 12-48, windows of 7^3 = 343 tokens,
head width 4-16) is bound by memory traffic, not arithmetic. MONAI's window attention writes the
full score tensor ``[windows, heads, 343, 343]`` and reads it back four times (bias add, mask add,
softmax, matmul); on CPU its small convolutions fall back to the unvectorised ``slow_conv3d``
kernel, because PyTorch's dispatch rule looks only at the first four input dimensions and so judges
a 3-D volume to be small. This module changes how five classes compute, never what:

- ``WindowAttention``: fused ``scaled_dot_product_attention`` with the relative position bias and
  the shifted-window mask folded into one additive mask, in chunks of windows so the mask stays in
  cache. For CPU training a hand-written backward recomputes the scores chunk by chunk, sums the
  relative position bias gradient over windows and scatters it into MONAI's bias table with
  ``index_add_``.
- ``BasicLayer``: the shifted-window mask is built once per volume size, not every forward.
- ``nn.Conv3d`` (CPU, float32): oneDNN for every size; channels-last while training.
- ``nn.ConvTranspose3d`` with kernel = stride (inference): a 1x1x1 convolution + depth-to-space.
- ``nn.InstanceNorm3d`` without affine: a layer norm over each channel's voxels.

``accelerate(net)`` swaps the classes of those modules in place. Parameters, buffers and
``state_dict`` keys are MONAI's own: published weights load, and a checkpoint loads back into
stock MONAI. Under tracing or scripting (ONNX/TorchScript export), for attention dropout, for
training off the CPU, and for dtypes the fast kernels do not take, each module runs MONAI's own
forward. ``tests/nets`` holds the outputs equal to MONAI's within 1e-4 and the gradients within
float32 rounding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.nets import swin_unetr as monai_swin
from torch import nn

# Scores kept in flight per chunk of windows: 2**20 floats (4 MiB) fits in a core's L2/L3 share.
CHUNK_SCORES = 2**20


def _exporting() -> bool:
    return torch.jit.is_tracing() or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export()


def _window_chunks(windows: int, heads: int, tokens: int, mask: torch.Tensor | None, budget: int):
    """Yield ``(start, stop, mask_rows)`` over ``windows`` without crossing a batch item.

    Window ``w`` of the flattened ``[batch * nw]`` axis uses mask row ``w % nw``.
    """
    per_chunk = max(1, budget // (heads * tokens * tokens))
    if mask is None:
        for start in range(0, windows, per_chunk):
            yield start, min(start + per_chunk, windows), None
        return
    nw = mask.shape[0]
    for base in range(0, windows, nw):
        for i in range(0, nw, per_chunk):
            j = min(i + per_chunk, nw)
            yield base + i, base + j, mask[i:j]


def _chunk_mask(bias: torch.Tensor, mask_rows: torch.Tensor | None, count: int) -> torch.Tensor:
    """Additive attention mask of one chunk: ``[count, heads, n, n]`` (bias + shift mask)."""
    if mask_rows is None:
        return bias.unsqueeze(0).expand(count, -1, -1, -1)
    return bias.unsqueeze(0) + mask_rows.unsqueeze(1)


def _relative_bias(table: torch.Tensor, index: torch.Tensor, tokens: int) -> torch.Tensor:
    """MONAI's relative position bias for windows of ``tokens`` tokens: ``[heads, n, n]``."""
    return table[index].view(tokens, tokens, -1).permute(2, 0, 1)


def _attention_forward(q, k, v, bias, mask, scale, budget):
    """Fused attention over chunks of windows. q, k, v: [W, h, n, d] -> out [W, h, n, d].

    ``bias`` [h, n, n] is shared by all windows; ``mask`` [nw, n, n] (or None) is the shift mask of
    window ``w % nw``."""
    flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    if mask is None:  # one call: the [1, h, n, n] bias broadcasts over windows without a copy
        return flash(q, k, v, attn_mask=bias.unsqueeze(0).to(q.dtype), scale=scale)[0]
    out = torch.empty_like(q)
    for start, stop, rows in _window_chunks(q.shape[0], q.shape[1], q.shape[2], mask, budget):
        attn_mask = _chunk_mask(bias, rows, stop - start).to(q.dtype)  # [c, h, n, n]
        out[start:stop] = flash(q[start:stop], k[start:stop], v[start:stop], attn_mask=attn_mask, scale=scale)[0]
    return out


class _CpuWindowAttention(torch.autograd.Function):
    """Window attention with a learnable relative position bias, fused forward, chunked backward (CPU, fp32)."""

    @staticmethod
    def forward(ctx, q, k, v, table, index, mask, scale, budget):
        tokens = q.shape[2]
        bias = _relative_bias(table, index, tokens)  # [h, n, n]
        out = _attention_forward(q, k, v, bias, mask, scale, budget)
        ctx.save_for_backward(q, k, v, table, index, mask)
        ctx.scale, ctx.budget = scale, budget
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, table, index, mask = ctx.saved_tensors
        scale = ctx.scale
        windows, heads, tokens, width = q.shape
        bias = _relative_bias(table, index, tokens)
        grad_out = grad_out.contiguous()
        q_scaled = q * scale
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        dbias = torch.zeros(heads, tokens, tokens, dtype=q.dtype, device=q.device)
        for start, stop, rows in _window_chunks(windows, heads, tokens, mask, ctx.budget):
            count = (stop - start) * heads
            qc = q_scaled[start:stop].view(count, tokens, width)
            kc = k[start:stop].view(count, tokens, width)
            vc = v[start:stop].view(count, tokens, width)
            goc = grad_out[start:stop].view(count, tokens, width)
            scores = torch.bmm(qc, kc.transpose(1, 2))  # [c*h, n, n]
            scores.view(stop - start, heads, tokens, tokens).add_(_chunk_mask(bias, rows, stop - start))
            probs = torch.softmax(scores, dim=-1)
            dprobs = torch.bmm(goc, vc.transpose(1, 2))  # [c*h, n, n]
            dscores = torch._softmax_backward_data(dprobs, probs, -1, probs.dtype)  # P * (dP - rowsum(dP * P))
            dbias += dscores.view(stop - start, heads, tokens, tokens).sum(0)
            torch.bmm(probs.transpose(1, 2), goc, out=dv[start:stop].view(count, tokens, width))
            torch.bmm(dscores, kc, out=dq[start:stop].view(count, tokens, width))
            torch.bmm(dscores.transpose(1, 2), qc, out=dk[start:stop].view(count, tokens, width))
        dq.mul_(scale)
        dtable = None
        if ctx.needs_input_grad[3]:
            flat = dbias.permute(1, 2, 0).reshape(tokens * tokens, heads)
            dtable = torch.zeros_like(table).index_add_(0, index, flat)
        return dq, dk, dv, dtable, None, None, None, None


class WindowAttention(monai_swin.WindowAttention):
    """MONAI's window attention computed with fused kernels; same parameters, same result."""

    budget = CHUNK_SCORES

    def forward(self, x, mask):
        dropout = self.training and self.attn_drop.p > 0
        cpu32 = x.device.type == "cpu" and x.dtype == torch.float32
        # Training off the CPU stays on MONAI's path: the fused kernels there were not measured here.
        if _exporting() or dropout or (torch.is_grad_enabled() and not cpu32) or not x.is_floating_point():
            return super().forward(x, mask)
        b, n, c = x.shape
        heads = self.num_heads
        qkv = self.qkv(x).view(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4).contiguous()
        q, k, v = qkv.unbind(0)  # each [b, heads, n, d]
        index = self.relative_position_index[:n, :n].reshape(-1)
        table = self.relative_position_bias_table
        if mask is not None:
            mask = mask.to(q.dtype)
        if cpu32 and q.dtype == torch.float32:
            if torch.is_grad_enabled():
                out = _CpuWindowAttention.apply(q, k, v, table, index, mask, self.scale, self.budget)
            else:
                out = _attention_forward(q, k, v, _relative_bias(table, index, n), mask, self.scale, self.budget)
        else:  # inference on a GPU or in reduced precision: as MONAI's use_flash_attention does it
            bias = _relative_bias(table, index, n).to(q.dtype).unsqueeze(0)  # [1, h, n, n]
            if mask is not None:
                nw = mask.shape[0]
                bias = (bias.unsqueeze(1) + mask.view(1, nw, 1, n, n)).expand(b // nw, -1, -1, -1, -1)
                bias = bias.reshape(b, heads, n, n)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=self.scale)
        x = out.transpose(1, 2).reshape(b, n, c)
        return self.proj_drop(self.proj(x))


class BasicLayer(monai_swin.BasicLayer):
    """MONAI's Swin stage with its shifted-window mask built once per padded volume size."""

    def forward(self, x):
        if x.dim() != 5 or self.use_hyena or _exporting():
            return super().forward(x)
        b, _, d, h, w = x.shape
        window, shift = monai_swin.get_window_size((d, h, w), self.window_size, self.shift_size)
        padded = tuple(-(-size // win) * win for size, win in zip((d, h, w), window))
        mask = self._mask(padded, window, shift, x.device)
        x = x.permute(0, 2, 3, 4, 1)  # [b, d, h, w, c]
        for block in self.blocks:
            x = block(x, mask)
        x = x.reshape(b, d, h, w, -1)
        if self.downsample is not None:
            x = self.downsample(x)
        return x.permute(0, 4, 1, 2, 3)

    def _mask(self, padded, window, shift, device):
        key = (padded, window, shift, device)
        cache = self.__dict__.setdefault("_mask_cache", {})
        if key not in cache:
            cache.clear()
            with torch.inference_mode(False):  # a mask made under inference_mode could not be saved for backward
                cache[key] = monai_swin.compute_mask(list(padded), window, shift, device)
        return cache[key]


class Conv3d(nn.Conv3d):
    """``nn.Conv3d`` that takes oneDNN's fast paths on CPU (float32, 3-D, zero padding).

    - Inference, small volumes: PyTorch sends a batch-1 convolution to its unvectorised reference
      kernel when ``N * C * D * H <= 20480``, a rule tuned for 2-D images that judges a 32^3 volume
      with 12 channels small. Here it calls oneDNN directly.
    - Training, small volumes: oneDNN has no separate backward op, and the backward takes the same
      rule; a batch of two depth halves (each with its halo of ``padding`` slices) goes to oneDNN
      forward and backward.
    - Training, larger volumes: channels-last, oneDNN's own layout, which halves a training step's
      convolution time at 64^3. (At inference it does not pay for its two copies, so it is not used.)
    """

    def _conv_forward(self, x, weight, bias):
        if not self._onednn(x):
            return super()._conv_forward(x, weight, bias)
        training = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)
        small = x.shape[0] == 1 and x.shape[1] * x.shape[2] * x.shape[3] <= 20480
        if small and not training:
            return torch.ops.aten.mkldnn_convolution(x, weight, bias, self.padding, self.stride, self.dilation, 1)
        if small and self._splits_in_depth(x):
            half, pad = x.shape[2] // 2, self.padding[0]
            xp = F.pad(x, (0, 0, 0, 0, pad, pad))
            halves = torch.cat([xp[:, :, : half + 2 * pad], xp[:, :, half:]], 0)  # [2, C, D/2 + 2p, H, W]
            y = F.conv3d(halves, weight, bias, self.stride, (0, *self.padding[1:]), self.dilation)
            return torch.cat([y[:1], y[1:]], 2)  # [1, C', D, H, W]
        if training and not small:
            cl = torch.channels_last_3d
            y = super()._conv_forward(x.contiguous(memory_format=cl), weight.contiguous(memory_format=cl), bias)
            return y.contiguous()
        return super()._conv_forward(x, weight, bias)

    def _onednn(self, x: torch.Tensor) -> bool:
        return (
            x.device.type == "cpu"
            and x.dtype == torch.float32
            and x.dim() == 5
            and self.padding_mode == "zeros"
            and not isinstance(self.padding, str)
            and self.groups == 1
            and not _exporting()
            and torch.backends.mkldnn.is_available()
            and torch.backends.mkldnn.enabled
        )

    def _splits_in_depth(self, x: torch.Tensor) -> bool:
        """Stride 1 and 'same' padding along depth, even depth: two halves with halos give the same output."""
        return (
            self.stride[0] == 1
            and self.dilation[0] == 1
            and self.kernel_size[0] == 2 * self.padding[0] + 1
            and x.shape[2] % 2 == 0
        )


class ConvTranspose3d(nn.ConvTranspose3d):
    """``nn.ConvTranspose3d`` whose kernel equals its stride (Swin UNETR's 2x upsampling) computed at
    inference as a 1x1x1 convolution to ``C_out * 8`` channels and one depth-to-space copy: PyTorch's
    oneDNN deconvolution spends more time copying its output to a contiguous layout than computing it."""

    def forward(self, x, output_size=None):
        k = self.kernel_size
        if (
            torch.is_grad_enabled()
            or output_size is not None
            or x.dim() != 5
            or x.device.type != "cpu"
            or x.dtype != torch.float32
            or _exporting()
            or tuple(self.stride) != tuple(k)
            or any(self.padding)
            or any(self.output_padding)
            or any(d != 1 for d in self.dilation)
            or self.groups != 1
        ):
            return super().forward(x, output_size)
        b, _, d, h, w = x.shape
        out = self.out_channels
        weight = self.weight.permute(1, 2, 3, 4, 0).reshape(
            out * k[0] * k[1] * k[2], -1, 1, 1, 1
        )  # [(o, a, b, c), C_in]
        y = F.conv3d(x, weight)  # [B, C_out * kd * kh * kw, D, H, W]
        y = y.view(b, out, *k, d, h, w).permute(0, 1, 5, 2, 6, 3, 7, 4).reshape(b, out, d * k[0], h * k[1], w * k[2])
        if self.bias is not None:
            y += self.bias.view(1, -1, 1, 1, 1)
        return y


class InstanceNorm3d(nn.InstanceNorm3d):
    """``nn.InstanceNorm3d`` without affine or running statistics, computed as a layer norm over each
    channel's voxels: the same statistics, and about a third faster on CPU than PyTorch's instance norm."""

    def forward(self, x):
        if self.affine or self.track_running_stats or x.dim() != 5 or _exporting():
            return super().forward(x)
        b, c = x.shape[:2]
        flat = x.reshape(b, c, -1)
        return F.layer_norm(flat, flat.shape[-1:], eps=self.eps).view_as(x)


FAST_CLASSES = {
    monai_swin.WindowAttention: WindowAttention,
    monai_swin.BasicLayer: BasicLayer,
    nn.Conv3d: Conv3d,
    nn.ConvTranspose3d: ConvTranspose3d,
    nn.InstanceNorm3d: InstanceNorm3d,
}


def accelerate(net: nn.Module) -> nn.Module:
    """Swap MONAI's window attention and Swin stages, and the 3-D convolutions, transposed convolutions and
    instance norms in ``net``, for the fast classes above.

    Only the class changes; every parameter, buffer and state_dict key stays where MONAI put it.
    """
    for module in net.modules():
        fast = FAST_CLASSES.get(type(module))
        if fast is not None:
            module.__class__ = fast
    return net
