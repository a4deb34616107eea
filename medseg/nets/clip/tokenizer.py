"""The WordPiece tokenizer of :class:`medseg.nets.clip.text.TransformerTextEncoder`, fitted on the training
reports the same way every run."""

from __future__ import annotations

import string
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

from medseg.errors import MedsegError


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
            return cls.from_str(path.read_text(encoding="utf-8"), context_length)
        except Exception as e:  # OSError, or the tokenizers library's own parse error
            raise MedsegError(f"{path}: not a readable tokenizer.json ({type(e).__name__}: {e})") from None

    def to_str(self) -> str:
        return self.tokenizer.to_str()

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_str(), encoding="utf-8")

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
