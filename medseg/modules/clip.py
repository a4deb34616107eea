"""LightningModule for CLIP-style image-report pre-training with injected image and text encoders.

Batch contract (``medseg.data.reports.ReportDataModule``): ``image`` [B, 4, X, Y, Z], ``report`` list of B
strings, ``case_id`` list of B strings, ``labels`` {name: list of B strings}, ``pair_index`` [B].

Logged: ``train/loss``, ``train/loss_i2t``, ``train/loss_t2i``, ``train/logit_scale``; ``val/loss``;
over the whole validation set ``val/i2t_recall@K`` and ``val/t2i_recall@K`` (K in ``recall_k``), and per
zero-shot task ``val/zs_<task>_acc`` and ``val/zs_<task>_auroc``.

Zero-shot classification: each class's prompts are embedded, averaged and normalised (a prompt ensemble);
class probabilities are ``softmax(scale * image @ classes.T)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from medseg.errors import MedsegError
from medseg.losses.clip import ClipLoss
from medseg.metrics.retrieval import retrieval_recall, zero_shot_metrics
from medseg.modules.hparams import save_hparams
from medseg.modules.schedule import warmup_cosine

TOKENIZER_FILE = "tokenizer.json"


class ClipModule(pl.LightningModule):
    def __init__(
        self,
        image_encoder: nn.Module,
        text_encoder: nn.Module,
        lr: float = 5e-4,
        weight_decay: float = 0.05,
        warmup_steps: float = 0.05,
        init_temperature: float = 0.07,
        max_logit_scale: float = 100.0,
        learn_temperature: bool = True,
        local_loss: bool = False,
        recall_k: tuple[int, ...] = (1, 5, 10),
        zero_shot: dict[str, dict[str, list[str]]] | None = None,
    ) -> None:
        """
        Args:
            image_encoder: image [B, 4, X, Y, Z] -> [B, D] (e.g. ``medseg.nets.clip.ViTImageEncoder``).
            text_encoder: list of B reports -> [B, D] (e.g. ``medseg.nets.clip.TransformerTextEncoder``; its
                tokenizer is fitted on the training reports when it has none).
            lr: peak AdamW learning rate.
            weight_decay: AdamW weight decay (not on biases, norms, embeddings' 1-D parameters or the temperature).
            warmup_steps: linear warm-up in optimizer steps, or a fraction of all steps if < 1; cosine decay to 0
                after it, ending at ``trainer.max_steps`` or where ``trainer.max_time`` runs out
                (``medseg.modules.schedule``).
            init_temperature: starting softmax temperature (scale 1/0.07 as CLIP).
            max_logit_scale: the scale is clamped at this value (100).
            learn_temperature: learn the temperature (else fixed).
            local_loss: under DDP score only local rows against the global batch (see ``ClipLoss``).
            recall_k: K of the retrieval Recall@K logged in validation.
            zero_shot: zero-shot tasks scored in validation: ``{task: {class: [prompts]}}``, ``task`` the name of a
                label in the pairs file (e.g. ``enhancing``) and ``class`` one of its values (``yes``/``no``).
        """
        super().__init__()
        save_hparams(self)  # the encoders as configs when LightningCLI built them; else left out
        dims = getattr(image_encoder, "embed_dim", None), getattr(text_encoder, "embed_dim", None)
        if None not in dims and dims[0] != dims[1]:
            raise ValueError(f"image and text encoders must share embed_dim, got {dims[0]} and {dims[1]}")
        self.image_encoder, self.text_encoder = image_encoder, text_encoder
        self.loss = ClipLoss(init_temperature, max_logit_scale, learn_temperature, local_loss)
        self._val: list[dict] = []

    # ------------------------------------------------------------------------------------------ embeddings

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        """image [B, 4, X, Y, Z] -> L2-normalised [B, D]."""
        return F.normalize(self.image_encoder(image), dim=-1)

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        """B strings -> L2-normalised [B, D]."""
        return F.normalize(self.text_encoder(list(texts)), dim=-1)

    def forward(self, image: torch.Tensor, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """``image_emb`` [B, D] and ``text_emb`` [B, D], both L2-normalised."""
        return {"image_emb": self.encode_image(image), "text_emb": self.encode_text(texts)}

    @torch.no_grad()
    def class_embeddings(self, prompts: dict[str, Sequence[str]]) -> torch.Tensor:
        """{class: [prompts]} -> [C, D]: each class's prompt embeddings averaged, then normalised."""
        rows = []
        for name, texts in prompts.items():
            if isinstance(texts, str) or not texts:
                raise MedsegError(f"zero-shot class {name!r} needs a non-empty list of prompts, got {texts!r}")
            rows.append(F.normalize(self.encode_text(list(texts)).mean(0), dim=-1))  # [D]
        return torch.stack(rows)  # [C, D]

    def zero_shot_probs(self, image_emb: torch.Tensor, class_emb: torch.Tensor) -> torch.Tensor:
        """Normalised image [N, D], classes [C, D] -> probabilities [N, C]."""
        return torch.softmax(self.loss.scale() * image_emb @ class_emb.T, dim=-1)  # [N, C]

    # ------------------------------------------------------------------------------------------ steps

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        self._check_image_size(datamodule)
        fit = getattr(self.text_encoder, "fit_tokenizer", None)
        if fit is None or getattr(self.text_encoder, "tokenizer_fitted", True):
            return
        if datamodule is None or not hasattr(datamodule, "train_reports"):
            raise MedsegError(
                "the text encoder has no tokenizer and no training reports to fit one on: give tokenizer="
            )
        tokenizer = fit(datamodule.train_reports())
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:  # every rank: rank 0's vocab
            text = self.trainer.strategy.broadcast(tokenizer.to_str(), src=0)
            self.text_encoder.set_extra_state({"tokenizer": text})

    def _check_image_size(self, datamodule) -> None:
        size = getattr(getattr(datamodule, "hparams", None), "roi_size", None)
        if size is None:
            return
        size = tuple(int(s) for s in size)
        divisor = getattr(self.image_encoder, "size_divisor", 1)
        expected = getattr(self.image_encoder, "img_size", None)
        if any(s % divisor for s in size) or (expected is not None and tuple(expected) != size):
            need = f"exactly {tuple(expected)}" if expected is not None else f"multiples of {divisor}"
            raise MedsegError(
                f"data roi_size {size} does not fit {type(self.image_encoder).__name__}: it needs {need}; "
                "set data.init_args.roi_size and the encoder's size together"
            )

    def on_fit_start(self) -> None:
        tokenizer = getattr(self.text_encoder, "tokenizer", None)
        if self.global_rank != 0 or not hasattr(tokenizer, "save"):
            return
        callback = self.trainer.checkpoint_callback
        folder = Path(getattr(callback, "dirpath", None) or self.trainer.default_root_dir)
        folder.mkdir(parents=True, exist_ok=True)
        tokenizer.save(folder / TOKENIZER_FILE)  # also inside every checkpoint's state_dict

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        out = self(batch["image"], batch["report"])
        losses = self.loss(out["image_emb"], out["text_emb"])
        self.log_dict({f"train/{k}": v for k, v in losses.items()}, prog_bar=True, batch_size=len(batch["report"]))
        return losses["loss"]

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        out = self(batch["image"], batch["report"])
        if len(batch["report"]) > 1:
            loss = self.loss(out["image_emb"], out["text_emb"])["loss"]
            self.log("val/loss", loss, batch_size=len(batch["report"]), sync_dist=True)
        self._val.append({
            "image": out["image_emb"].cpu(), "text": out["text_emb"].cpu(),
            "index": torch.as_tensor(batch["pair_index"]).cpu(), "labels": dict(batch.get("labels") or {}),
        })  # fmt: skip

    def on_validation_epoch_end(self) -> None:
        parts, self._val = self._gather(self._val), []
        if not parts or self.trainer.sanity_checking:
            return
        index = torch.cat([p["index"] for p in parts])  # [N'] (DistributedSampler may repeat pairs)
        _, first = np.unique(index.numpy(), return_index=True)
        keep = torch.as_tensor(first)
        image = torch.cat([p["image"] for p in parts])[keep]  # [N, D]
        text = torch.cat([p["text"] for p in parts])[keep]  # [N, D]
        metrics = retrieval_recall(image, text, self.hparams.recall_k)
        for task, prompts in (self.hparams.zero_shot or {}).items():
            truth = [v for p in parts for v in p["labels"].get(task, [""] * len(p["index"]))]
            truth = [truth[i] for i in first]
            if not any(truth):
                continue
            probs = self.zero_shot_probs(image.to(self.device), self.class_embeddings(prompts)).cpu()  # [N, C]
            scores = zero_shot_metrics(probs, truth, list(prompts))
            metrics.update({f"zs_{task}_{name}": value for name, value in scores.items()})
        self.log_dict({f"val/{k}": v for k, v in metrics.items()}, prog_bar=False, rank_zero_only=True)

    @staticmethod
    def _gather(parts: list[dict]) -> list[dict]:
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return parts
        everyone: list = [None] * dist.get_world_size()
        dist.all_gather_object(everyone, parts)
        return [p for rank in everyone for p in rank]

    def configure_optimizers(self):
        decay, no_decay = [], []
        for p in self.parameters():
            if p.requires_grad:
                (decay if p.ndim >= 2 else no_decay).append(p)  # biases, norms, temperature: no decay
        groups = [
            {"params": decay, "weight_decay": self.hparams.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        optimizer = torch.optim.AdamW(groups, lr=self.hparams.lr)
        return warmup_cosine(optimizer, self.trainer, self.hparams.warmup_steps)
