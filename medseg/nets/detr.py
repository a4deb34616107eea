"""DETR for 3-D volumes (Carion et al. 2020): CNN features -> transformer -> a set of boxes.

A backbone turns the image [B, C, X, Y, Z] into features [B, F, x, y, z]; a 1x1x1 convolution projects
them to ``hidden_dim`` and they are flattened to x*y*z tokens. The layers of a ``torch.nn.Transformer``
(post-norm) encode them and decode ``n_queries`` learned object queries into ``n_queries`` predictions,
each a class (``n_classes`` + "no object") and a box. As in DETR's ``models/transformer.py``, a 3-D sine
positional encoding is added to the queries and keys of every attention over the tokens, and the query
embedding to the queries of every decoder attention (the decoder starts from zeros); hence the layers'
own modules are called by :func:`_encoder_layer` / :func:`_decoder_layer` rather than ``forward``.

Backbones (any ``nn.Module`` with an ``out_channels`` attribute fits): :class:`ConvBackbone3d`, a small
strided CNN for CPU budgets, and :class:`ResNetBackbone3d`, MONAI's 3-D ResNet without its head.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from monai.networks.nets import resnet
from torch import Tensor, nn

from medseg.boxes import box_cxcyczwhd_to_xyzxyz


class ConvBackbone3d(nn.Module):
    """Strided 3-D CNN: one stage per entry of ``channels``, each halving the grid.

    A stage is conv 3^3 stride 2 -> GroupNorm -> ReLU, then ``convs_per_stage - 1`` more conv 3^3 blocks.
    [B, in_channels, X, Y, Z] -> [B, channels[-1], X / 2^S, Y / 2^S, Z / 2^S] (rounded up), S = len(channels).
    """

    def __init__(
        self, in_channels: int = 4, channels: Sequence[int] = (16, 32, 64, 128), convs_per_stage: int = 2
    ) -> None:
        super().__init__()
        layers, previous = [], in_channels
        for width in channels:
            for i in range(convs_per_stage):
                layers += [
                    nn.Conv3d(previous, width, 3, stride=2 if i == 0 else 1, padding=1, bias=False),
                    nn.GroupNorm(min(8, width), width),
                    nn.ReLU(inplace=True),
                ]
                previous = width
        self.body = nn.Sequential(*layers)
        self.out_channels = previous
        self.stride = 2 ** len(channels)

    def forward(self, image: Tensor) -> Tensor:
        return self.body(image)


class ResNetBackbone3d(nn.Module):
    """MONAI's 3-D ResNet (10/18/34/50) up to ``layer4``, without pooling and classifier.

    Output stride 32 (16 with ``no_max_pool``): a 64^3 input gives 2^3 (4^3) tokens, so prefer
    ``no_max_pool`` for small inputs. ``widen_factor`` scales every width (0.25: 16 ... 128 channels).
    """

    def __init__(
        self, depth: int = 18, in_channels: int = 4, widen_factor: float = 1.0, no_max_pool: bool = False
    ) -> None:
        super().__init__()
        builders = {10: resnet.resnet10, 18: resnet.resnet18, 34: resnet.resnet34, 50: resnet.resnet50}
        if depth not in builders:
            raise ValueError(f"ResNet depth {depth} is not offered; choose one of {sorted(builders)}")
        net = builders[depth](
            spatial_dims=3, n_input_channels=in_channels, widen_factor=widen_factor, no_max_pool=no_max_pool
        )
        self.stem = nn.Sequential(net.conv1, net.bn1, net.act, net.maxpool)
        self.layers = nn.Sequential(net.layer1, net.layer2, net.layer3, net.layer4)
        self.out_channels = int(net.in_planes)  # width of layer4's output
        self.stride = 16 if no_max_pool else 32

    def forward(self, image: Tensor) -> Tensor:
        return self.layers(self.stem(image))


def sine_position_encoding_3d(shape: Sequence[int], dim: int, temperature: float = 10000.0) -> Tensor:
    """DETR's sine encoding in 3-D: [x*y*z, dim] for a grid of ``shape`` (x, y, z), flattened in C order.

    Each axis gets ``2 * (dim // 6)`` features (sines then cosines of its position, normalised to
    (0, 2 pi]); the ``dim % 6`` features left over are zero.
    """
    per_axis = 2 * (dim // 6)
    if per_axis == 0:
        raise ValueError(f"hidden_dim {dim} is too small for a 3-D positional encoding (need at least 6)")
    freqs = temperature ** (2 * (torch.arange(per_axis // 2, dtype=torch.float32)) / per_axis)  # [per_axis/2]
    parts = []
    for axis, n in enumerate(shape):
        position = (torch.arange(n, dtype=torch.float32) + 1) / n * 2 * math.pi  # [n]
        angle = position[:, None] / freqs  # [n, per_axis/2]
        encoding = torch.cat([angle.sin(), angle.cos()], dim=1)  # [n, per_axis]
        view = [1, 1, 1, per_axis]
        view[axis] = n
        parts.append(encoding.view(view).expand(*shape, per_axis))  # [x, y, z, per_axis]
    pos = torch.cat(parts, dim=-1).reshape(-1, 3 * per_axis)  # [x*y*z, 3*per_axis]
    return nn.functional.pad(pos, (0, dim - 3 * per_axis))  # [x*y*z, dim]


class MLP(nn.Module):
    """``n_layers`` linear layers with ReLU between them (DETR's box head)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, n_layers: int) -> None:
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (n_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else torch.relu(layer(x))
        return x


class DETR3d(nn.Module):
    def __init__(
        self,
        backbone: nn.Module,
        n_classes: int = 1,
        n_queries: int = 8,
        hidden_dim: int = 96,
        n_heads: int = 4,
        enc_layers: int = 2,
        dec_layers: int = 2,
        ff_dim: int = 256,
        dropout: float = 0.0,
        aux_loss: bool = True,
        reference_points: bool = False,
    ) -> None:
        """
        Args:
            backbone: image [B, C, X, Y, Z] -> features [B, F, x, y, z]; must say ``out_channels`` (F).
            n_classes: object classes K, without "no object" (1: lesion / no lesion).
            n_queries: object queries, the most objects one image can hold (DETR: 100; 8 for the demo).
            hidden_dim: transformer width (DETR: 256).
            n_heads: attention heads; must divide ``hidden_dim``.
            enc_layers: transformer encoder layers (DETR: 6).
            dec_layers: transformer decoder layers (DETR: 6); each gives an auxiliary prediction.
            ff_dim: width of the transformer feed-forward layers (DETR: 2048).
            dropout: transformer dropout (DETR: 0.1).
            aux_loss: return the predictions of every decoder layer under ``aux_outputs``.
            reference_points: give each query a learned reference point (initialised uniformly in the
                volume) and predict box centres as offsets from it (in logit space), as Conditional /
                DAB-DETR do; queries then own regions from the first step, which makes matching stable
                and training much faster on small budgets. False: plain DETR.
        """
        super().__init__()
        channels = getattr(backbone, "out_channels", None)
        if not isinstance(channels, int):
            raise ValueError(
                f"backbone {type(backbone).__name__} must have an int attribute out_channels (its feature channels)"
            )
        if hidden_dim % n_heads:
            raise ValueError(f"hidden_dim {hidden_dim} is not divisible by n_heads {n_heads}")
        self.backbone = backbone
        self.n_classes, self.n_queries, self.aux_loss = n_classes, n_queries, aux_loss
        self.input_proj = nn.Conv3d(channels, hidden_dim, kernel_size=1)
        self.transformer = nn.Transformer(
            d_model=hidden_dim,
            nhead=n_heads,
            num_encoder_layers=enc_layers,
            num_decoder_layers=dec_layers,
            dim_feedforward=ff_dim,
            dropout=dropout,
            batch_first=True,
        )
        self.query_embed = nn.Embedding(n_queries, hidden_dim)
        self.class_embed = nn.Linear(hidden_dim, n_classes + 1)
        self.bbox_embed = MLP(hidden_dim, hidden_dim, 6, 3)
        self.reference = None
        if reference_points:
            self.reference = nn.Parameter(torch.logit(torch.rand(n_queries, 3).clamp(0.05, 0.95)))  # [Q, 3]

    def forward(self, image: Tensor) -> dict:
        """image [B, C, X, Y, Z] -> dict:

        - ``pred_logits`` [B, Q, K + 1]: class logits; the last class is "no object";
        - ``pred_boxes`` [B, Q, 6]: boxes (cx, cy, cz, w, h, d), normalised to [0, 1] of the input volume;
        - ``aux_outputs``: with ``aux_loss``, a list of ``dec_layers - 1`` dicts with ``pred_logits`` and
          ``pred_boxes`` from the earlier decoder layers (first to last).
        """
        features = self.input_proj(self.backbone(image))  # [B, D, x, y, z]
        pos = sine_position_encoding_3d(features.shape[2:], features.shape[1]).to(features)  # [T, D]
        memory = features.flatten(2).transpose(1, 2)  # [B, T, D], T = x*y*z
        for layer in self.transformer.encoder.layers:
            memory = _encoder_layer(layer, memory, pos)  # [B, T, D]
        memory = self.transformer.encoder.norm(memory)
        query_pos = self.query_embed.weight  # [Q, D]
        hidden = torch.zeros(len(image), *query_pos.shape, dtype=memory.dtype, device=memory.device)  # [B, Q, D]
        layers_out = []
        for layer in self.transformer.decoder.layers:
            hidden = _decoder_layer(layer, hidden, memory, pos, query_pos)  # [B, Q, D]
            layers_out.append(self.transformer.decoder.norm(hidden))
        hs = torch.stack(layers_out)  # [L, B, Q, D]
        logits = self.class_embed(hs)  # [L, B, Q, K+1]
        boxes = self.bbox_embed(hs)  # [L, B, Q, 6] in logit space
        if self.reference is not None:
            boxes = torch.cat([boxes[..., :3] + self.reference, boxes[..., 3:]], dim=-1)
        boxes = boxes.sigmoid()
        out = {"pred_logits": logits[-1], "pred_boxes": boxes[-1]}
        if self.aux_loss:
            out["aux_outputs"] = [{"pred_logits": a, "pred_boxes": b} for a, b in zip(logits[:-1], boxes[:-1])]
        return out


def _encoder_layer(layer: nn.TransformerEncoderLayer, src: Tensor, pos: Tensor) -> Tensor:
    """A post-norm ``nn.TransformerEncoderLayer`` with positions added to queries and keys (DETR)."""
    q = k = src + pos
    src = layer.norm1(src + layer.dropout1(layer.self_attn(q, k, src, need_weights=False)[0]))
    return layer.norm2(src + layer.dropout2(layer.linear2(layer.dropout(layer.activation(layer.linear1(src))))))


def _decoder_layer(
    layer: nn.TransformerDecoderLayer, tgt: Tensor, memory: Tensor, pos: Tensor, query_pos: Tensor
) -> Tensor:
    """A post-norm ``nn.TransformerDecoderLayer`` with the query embedding added to its queries and the
    positions to the memory's keys, in every layer (DETR)."""
    q = k = tgt + query_pos
    tgt = layer.norm1(tgt + layer.dropout1(layer.self_attn(q, k, tgt, need_weights=False)[0]))
    attended = layer.multihead_attn(tgt + query_pos, memory + pos, memory, need_weights=False)[0]
    tgt = layer.norm2(tgt + layer.dropout2(attended))
    return layer.norm3(tgt + layer.dropout3(layer.linear2(layer.dropout(layer.activation(layer.linear1(tgt))))))


@torch.no_grad()
def postprocess(outputs: dict) -> list[dict]:
    """DETR's ``PostProcess``: per image a dict of ``scores`` [Q] (best object-class probability),
    ``labels`` [Q] (that class) and ``boxes`` [Q, 6] xyzxyz normalised to [0, 1], sorted by score."""
    prob = outputs["pred_logits"].softmax(-1)[..., :-1]  # [B, Q, K]
    scores, labels = prob.max(-1)  # [B, Q], [B, Q]
    boxes = box_cxcyczwhd_to_xyzxyz(outputs["pred_boxes"])  # [B, Q, 6]
    results = []
    for s, lab, b in zip(scores, labels, boxes):
        order = s.argsort(descending=True)
        results.append({"scores": s[order], "labels": lab[order], "boxes": b[order]})
    return results
