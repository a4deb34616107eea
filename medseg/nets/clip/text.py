"""CLIP text towers: a list of B report strings -> [B, embed_dim] (not normalised); each owns its tokenizer.

- :class:`TransformerTextEncoder`: a small Transformer trained from scratch, with a WordPiece
  :class:`~medseg.nets.clip.tokenizer.ReportTokenizer` fitted on the training reports; the fitted
  tokenizer travels inside the state_dict (``get_extra_state``), so a checkpoint is self-contained;
- :class:`HFTextEncoder`: any BERT-style Hugging Face model from a local folder (nothing is downloaded).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from medseg.errors import MedsegError
from medseg.nets.clip.head import ProjectionHead
from medseg.nets.clip.tokenizer import ReportTokenizer


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
            raise MedsegError(
                f"{folder}: not a Hugging Face model folder (no config.json; write one with save_pretrained)"
            )
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


def build_text_encoder(kind: Literal["transformer", "hf"] = "transformer", **kwargs) -> nn.Module:
    """``TransformerTextEncoder(**kwargs)`` or ``HFTextEncoder(**kwargs)`` by name."""
    encoders = {"transformer": TransformerTextEncoder, "hf": HFTextEncoder}
    if kind not in encoders:
        raise ValueError(f"text encoder must be one of {sorted(encoders)}, got {kind!r}")
    return encoders[kind](**kwargs)
