"""Image and report encoders for CLIP-style pre-training: plain nn.Modules, each ending in a projection head.

Image encoders take ``image`` [B, C, X, Y, Z] and return [B, embed_dim]:

- :class:`SwinImageEncoder`: the Swin transformer of MONAI's ``SwinUNETR`` (``.swinViT``, the same
  state_dict keys, so Swin UNETR weights load into it), last-stage features pooled;
- :class:`ViTImageEncoder`: MONAI's 3-D ``ViT``, patch tokens pooled.

Both pool onto a coarse ``pool_grid`` (default 2 x 2 x 2 cells, flattened) rather than one global mean, so
where a finding lies (left or right hemisphere) survives pooling.

Text encoders take a list of B report strings and return [B, embed_dim]; each owns its tokenizer:

- :class:`TransformerTextEncoder`: a small Transformer trained from scratch, with a WordPiece
  :class:`ReportTokenizer` (Hugging Face ``tokenizers``) fitted on the training reports; the fitted
  tokenizer travels inside the state_dict (``get_extra_state``), so a checkpoint is self-contained;
- :class:`HFTextEncoder`: any BERT-style Hugging Face model from a local folder (nothing is downloaded).
"""

from __future__ import annotations

import string
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from monai.networks.nets import SwinUNETR, ViT
from torch import nn

from medseg.errors import MedsegError


class ProjectionHead(nn.Module):
    """``linear``: one Linear layer; ``mlp``: Linear -> GELU -> Linear (ConVIRT's non-linear head)."""

    def __init__(self, in_dim: int, embed_dim: int, kind: Literal["linear", "mlp"] = "mlp") -> None:
        super().__init__()
        if kind == "linear":
            self.proj = nn.Linear(in_dim, embed_dim)
        elif kind == "mlp":
            self.proj = nn.Sequential(nn.Linear(in_dim, in_dim), nn.GELU(), nn.Linear(in_dim, embed_dim))
        else:
            raise ValueError(f"projection head must be 'linear' or 'mlp', got {kind!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


def _grid_pool(features: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
    """[B, C, X, Y, Z] -> [B, C * prod(grid)]: average over each cell of a coarse grid, then flatten."""
    return F.adaptive_avg_pool3d(features, tuple(grid)).flatten(1)


# --------------------------------------------------------------------------------------------- images


class SwinImageEncoder(nn.Module):
    """Swin UNETR's encoder (``monai.networks.nets.SwinUNETR(...).swinViT``) + pooling + projection head.

    Args:
        in_channels: image channels (4: t1, t1ce, t2, flair).
        embed_dim: size of the joint embedding.
        feature_size: Swin UNETR's feature size; the last stage has 16 x as many channels.
        depths, num_heads, window_size: Swin UNETR's stage depths, heads per stage and attention window.
        pool_grid: last-stage features are averaged over this grid of cells and flattened.
        head: projection head, ``linear`` or ``mlp``.
        dropout_path_rate: stochastic depth.
        use_checkpoint: gradient checkpointing (less memory, slower).

    Every input side must be a multiple of 32 (``size_divisor``).
    """

    size_divisor = 32

    def __init__(
        self,
        in_channels: int = 4,
        embed_dim: int = 128,
        feature_size: int = 12,
        depths: Sequence[int] = (2, 2, 2, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: int = 7,
        pool_grid: Sequence[int] = (2, 2, 2),
        head: Literal["linear", "mlp"] = "mlp",
        dropout_path_rate: float = 0.0,
        use_checkpoint: bool = False,
    ) -> None:
        super().__init__()
        net = SwinUNETR(
            in_channels=in_channels,
            out_channels=1,
            feature_size=feature_size,
            depths=tuple(depths),
            num_heads=tuple(num_heads),
            window_size=window_size,
            dropout_path_rate=dropout_path_rate,
            use_checkpoint=use_checkpoint,
        )
        self.swinViT = net.swinViT  # the decoder of `net` is dropped
        self.pool_grid = tuple(pool_grid)
        self.head = ProjectionHead(16 * feature_size * _cells(self.pool_grid), embed_dim, head)
        self.embed_dim = embed_dim

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """image [B, C, X, Y, Z] -> [B, embed_dim] (not normalised)."""
        features = self.swinViT(image, normalize=True)[-1]  # [B, 16*feature_size, X/32, Y/32, Z/32]
        return self.head(_grid_pool(features, self.pool_grid))  # [B, embed_dim]


class ViTImageEncoder(nn.Module):
    """MONAI's 3-D ``ViT`` (no classification head, so no Tanh) + pooling of patch tokens + projection head.

    Args:
        img_size: the input size [X, Y, Z] the position embeddings are made for (the data's ``image_size``).
        patch_size: patch edge (one int or three); must divide ``img_size``.
        hidden_size, mlp_dim, num_layers, num_heads: transformer width, MLP width, depth and heads.
        in_channels: image channels.
        embed_dim: size of the joint embedding.
        pool_grid: patch tokens, laid back on their grid, are averaged over this grid of cells and flattened.
        head: projection head, ``linear`` or ``mlp``.
        dropout_rate: dropout inside the transformer.
    """

    def __init__(
        self,
        img_size: Sequence[int] = (64, 64, 64),
        patch_size: int | Sequence[int] = 8,
        hidden_size: int = 192,
        mlp_dim: int = 768,
        num_layers: int = 4,
        num_heads: int = 3,
        in_channels: int = 4,
        embed_dim: int = 128,
        pool_grid: Sequence[int] = (2, 2, 2),
        head: Literal["linear", "mlp"] = "mlp",
        dropout_rate: float = 0.0,
    ) -> None:
        super().__init__()
        patch = (patch_size,) * 3 if isinstance(patch_size, int) else tuple(patch_size)
        if len(img_size) != 3 or any(s % p for s, p in zip(img_size, patch)):
            raise ValueError(f"ViT patch_size {patch} must divide every side of img_size {tuple(img_size)}")
        self.img_size = tuple(int(s) for s in img_size)
        self.grid = tuple(s // p for s, p in zip(self.img_size, patch))
        self.vit = ViT(
            in_channels=in_channels,
            img_size=self.img_size,
            patch_size=patch,
            hidden_size=hidden_size,
            mlp_dim=mlp_dim,
            num_layers=num_layers,
            num_heads=num_heads,
            classification=False,
            dropout_rate=dropout_rate,
            qkv_bias=True,
        )
        for block in self.vit.blocks:  # MONAI builds a LayerNorm for cross-attention it never uses: frozen, DDP
            if not block.with_cross_attention:  # would otherwise stop on parameters without gradients
                block.norm_cross_attn.requires_grad_(False)
        self.pool_grid = tuple(pool_grid)
        self.head = ProjectionHead(hidden_size * _cells(self.pool_grid), embed_dim, head)
        self.embed_dim = embed_dim

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """image [B, C, *img_size] -> [B, embed_dim] (not normalised)."""
        if tuple(image.shape[2:]) != self.img_size:
            raise ValueError(f"ViT image encoder expects images of size {self.img_size}, got {tuple(image.shape[2:])}")
        tokens, _ = self.vit(image)  # [B, N, hidden], N = prod(grid)
        features = tokens.transpose(1, 2).reshape(len(tokens), -1, *self.grid)  # [B, hidden, gx, gy, gz]
        return self.head(_grid_pool(features, self.pool_grid))  # [B, embed_dim]


def _cells(grid: Sequence[int]) -> int:
    if len(grid) != 3 or min(grid) < 1:
        raise ValueError(f"pool_grid must be 3 positive sizes, got {tuple(grid)}")
    return int(grid[0] * grid[1] * grid[2])


# --------------------------------------------------------------------------------------------- text


class ReportTokenizer:
    """WordPiece tokenizer (Hugging Face ``tokenizers``) fitted on report text; BERT-style normalisation.

    ``tokenizer(texts)`` -> ``ids`` [B, L] long and ``mask`` [B, L] bool (True on real tokens), every row
    ``[CLS] ... [SEP]`` padded with ``[PAD]`` (id 0) to the longest, truncated at ``context_length``.
    """

    PAD, UNK, CLS, SEP = "[PAD]", "[UNK]", "[CLS]", "[SEP]"

    def __init__(self, tokenizer, context_length: int = 96) -> None:
        self.tokenizer, self.context_length = tokenizer, context_length
        self.tokenizer.enable_truncation(max_length=context_length)
        self.tokenizer.enable_padding(pad_id=self.tokenizer.token_to_id(self.PAD), pad_token=self.PAD)

    @classmethod
    def fit(
        cls, texts: Iterable[str], vocab_size: int = 1000, context_length: int = 96, lowercase: bool = True
    ) -> ReportTokenizer:
        """A WordPiece vocabulary of at most ``vocab_size`` entries fitted on ``texts``, the same for the same
        texts: the special tokens, letters, digits and every character seen (word-initial and ``##``
        continuation), then whole words by descending count (ties by spelling); a word outside it is
        spelled in pieces.

        ``tokenizers``' own ``WordPieceTrainer`` is not used: it orders merges through a hash map and gives a
        different vocabulary, hence different token ids and a different trained model, on every run
        (huggingface/tokenizers#1794).
        """
        from tokenizers import (
            Tokenizer,
            decoders,
            models,
            normalizers,
            pre_tokenizers,
            processors,
        )

        normalizer = normalizers.BertNormalizer(lowercase=lowercase)
        pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        counts: Counter[str] = Counter()
        for text in texts:
            counts.update(word for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)))
        if not counts:
            raise MedsegError("cannot fit a tokenizer: the training reports hold no text")
        special = [cls.PAD, cls.UNK, cls.CLS, cls.SEP]  # ids 0-3
        alphabet = set(string.digits + (string.ascii_lowercase if lowercase else string.ascii_letters))
        alphabet |= {c for word in counts for c in word}  # so an unseen word is spelled, not [UNK]
        chars = sorted(alphabet) + sorted(f"##{c}" for c in alphabet)
        words = [w for w, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0])) if len(w) > 1]
        tokens = list(dict.fromkeys(special + chars + words))[:vocab_size]
        tokenizer = Tokenizer(models.WordPiece({t: i for i, t in enumerate(tokens)}, unk_token=cls.UNK))
        tokenizer.normalizer = normalizer
        tokenizer.pre_tokenizer = pre_tokenizer
        tokenizer.decoder = decoders.WordPiece()
        tokenizer.add_special_tokens(special)  # already in the vocabulary: keeps their ids, skipped by decode
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{cls.CLS} $A {cls.SEP}",
            special_tokens=[(t, tokenizer.token_to_id(t)) for t in (cls.CLS, cls.SEP)],
        )
        return cls(tokenizer, context_length)

    @classmethod
    def from_str(cls, text: str, context_length: int = 96) -> ReportTokenizer:
        from tokenizers import Tokenizer

        return cls(Tokenizer.from_str(text), context_length)

    @classmethod
    def from_file(cls, path: str | Path, context_length: int = 96) -> ReportTokenizer:
        path = Path(path)
        try:
            return cls.from_str(path.read_text(), context_length)
        except Exception as e:  # OSError, or the tokenizers library's own parse error
            raise MedsegError(f"{path}: not a readable tokenizer.json ({type(e).__name__}: {e})") from None

    def to_str(self) -> str:
        return self.tokenizer.to_str()

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_str())

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def __call__(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        encodings = self.tokenizer.encode_batch(list(texts))
        ids = torch.tensor([e.ids for e in encodings], dtype=torch.long)  # [B, L]
        mask = torch.tensor([e.attention_mask for e in encodings], dtype=torch.bool)  # [B, L]
        return ids, mask

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)


class TransformerTextEncoder(nn.Module):
    """A small pre-norm Transformer encoder trained from scratch, mean-pooled over real tokens, + head.

    Args:
        embed_dim: size of the joint embedding.
        width, layers, heads: model width, depth and attention heads.
        context_length: longest token sequence (longer reports are truncated).
        vocab_size: size of the embedding table; the tokenizer fitted on the training reports has at most
            this many entries.
        dropout: dropout in the transformer.
        head: projection head, ``linear`` or ``mlp``.
        tokenizer: a ``tokenizer.json`` to use instead of fitting one (e.g. the one saved beside an earlier
            run's checkpoints).
        lowercase: fold case when fitting the tokenizer.

    The tokenizer is fitted by :meth:`fit_tokenizer` (the Lightning module calls it on the training reports
    before training) and saved in the state_dict.
    """

    def __init__(
        self,
        embed_dim: int = 128,
        width: int = 128,
        layers: int = 3,
        heads: int = 4,
        context_length: int = 96,
        vocab_size: int = 1000,
        dropout: float = 0.1,
        head: Literal["linear", "mlp"] = "mlp",
        tokenizer: str | None = None,
        lowercase: bool = True,
    ) -> None:
        super().__init__()
        self.vocab_size, self.context_length, self.lowercase = vocab_size, context_length, lowercase
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.position_embedding = nn.Parameter(torch.zeros(context_length, width))
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.position_embedding, std=0.01)
        layer = nn.TransformerEncoderLayer(
            width, heads, 4 * width, dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.transformer = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.head = ProjectionHead(width, embed_dim, head)
        self.embed_dim = embed_dim
        self.tokenizer: ReportTokenizer | None = None
        if tokenizer is not None:
            self._set_tokenizer(ReportTokenizer.from_file(tokenizer, context_length), tokenizer)

    @property
    def tokenizer_fitted(self) -> bool:
        return self.tokenizer is not None

    def fit_tokenizer(self, texts: Iterable[str]) -> ReportTokenizer:
        """Fit the WordPiece tokenizer on ``texts`` (the training reports) and keep it."""
        tokenizer = ReportTokenizer.fit(texts, self.vocab_size, self.context_length, self.lowercase)
        self._set_tokenizer(tokenizer, "the fitted tokenizer")
        return tokenizer

    def _set_tokenizer(self, tokenizer: ReportTokenizer, source: str) -> None:
        if tokenizer.vocab_size > self.vocab_size:
            raise MedsegError(
                f"{source} has {tokenizer.vocab_size} tokens but the text encoder's vocab_size is {self.vocab_size}; "
                "raise vocab_size"
            )
        self.tokenizer = tokenizer

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        """B report strings -> [B, embed_dim] (not normalised)."""
        if self.tokenizer is None:
            raise MedsegError("the text encoder has no tokenizer: fit it on the training reports or pass tokenizer=")
        ids, mask = self.tokenizer(texts)  # [B, L], [B, L]
        ids, mask = ids.to(self.position_embedding.device), mask.to(self.position_embedding.device)
        x = self.token_embedding(ids) + self.position_embedding[: ids.shape[1]]  # [B, L, width]
        x = self.norm(self.transformer(x, src_key_padding_mask=~mask))  # [B, L, width]
        weights = mask.unsqueeze(-1).to(x.dtype)  # [B, L, 1]
        pooled = (x * weights).sum(1) / weights.sum(1).clamp(min=1)  # [B, width]
        return self.head(pooled)  # [B, embed_dim]

    def get_extra_state(self) -> dict:
        return {"tokenizer": None if self.tokenizer is None else self.tokenizer.to_str()}

    def set_extra_state(self, state: dict) -> None:
        text = (state or {}).get("tokenizer")
        if text is not None:
            self._set_tokenizer(ReportTokenizer.from_str(text, self.context_length), "the checkpoint's tokenizer")


class HFTextEncoder(nn.Module):
    """A BERT-style Hugging Face model (and its tokenizer) from a local folder + projection head.

    Args:
        path: a folder written by ``save_pretrained`` holding the model (config.json + weights) and its
            tokenizer; it is read with ``local_files_only=True``: nothing is downloaded.
        embed_dim: size of the joint embedding.
        pooling: ``cls`` (first token, as BERT) or ``mean`` over real tokens.
        context_length: longest token sequence (longer reports are truncated).
        freeze: keep the language model's weights fixed and train only the head.
        head: projection head, ``linear`` or ``mlp``.

    The checkpoint holds the weights as trained; rebuilding the module still needs ``path`` for the
    model's configuration and tokenizer.
    """

    def __init__(
        self,
        path: str,
        embed_dim: int = 128,
        pooling: Literal["cls", "mean"] = "cls",
        context_length: int = 128,
        freeze: bool = False,
        head: Literal["linear", "mlp"] = "linear",
    ) -> None:
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        folder = Path(path)
        if not (folder / "config.json").is_file():
            raise MedsegError(f"{folder}: not a Hugging Face model folder (no config.json; write one with save_pretrained)")
        try:
            self.model = AutoModel.from_pretrained(str(folder), local_files_only=True)
            self.tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        except (OSError, ValueError) as e:
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise MedsegError(f"{folder}: cannot load the model or its tokenizer ({reason})") from None
        if pooling not in ("cls", "mean"):
            raise ValueError(f"pooling must be 'cls' or 'mean', got {pooling!r}")
        self.pooling, self.context_length = pooling, context_length
        if freeze:
            self.model.requires_grad_(False)
        self.head = ProjectionHead(self.model.config.hidden_size, embed_dim, head)
        self.embed_dim = embed_dim

    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        """B report strings -> [B, embed_dim] (not normalised)."""
        device = next(self.head.parameters()).device
        batch = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.context_length, return_tensors="pt"
        ).to(device)
        hidden = self.model(**batch).last_hidden_state  # [B, L, hidden]
        if self.pooling == "cls":
            pooled = hidden[:, 0]  # [B, hidden]
        else:
            weights = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # [B, L, 1]
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)  # [B, hidden]
        return self.head(pooled)  # [B, embed_dim]


def build_image_encoder(kind: Literal["swin", "vit"] = "swin", **kwargs) -> nn.Module:
    """``SwinImageEncoder(**kwargs)`` or ``ViTImageEncoder(**kwargs)`` by name."""
    encoders = {"swin": SwinImageEncoder, "vit": ViTImageEncoder}
    if kind not in encoders:
        raise ValueError(f"image encoder must be one of {sorted(encoders)}, got {kind!r}")
    return encoders[kind](**kwargs)


def build_text_encoder(kind: Literal["transformer", "hf"] = "transformer", **kwargs) -> nn.Module:
    """``TransformerTextEncoder(**kwargs)`` or ``HFTextEncoder(**kwargs)`` by name."""
    encoders = {"transformer": TransformerTextEncoder, "hf": HFTextEncoder}
    if kind not in encoders:
        raise ValueError(f"text encoder must be one of {sorted(encoders)}, got {kind!r}")
    return encoders[kind](**kwargs)
