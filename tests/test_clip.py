"""CLIP-style image-report model: loss against brute force, DDP gather, tokenizer, local BERT, encoders, zero-shot
and retrieval metrics (the demo data and the CLI: tests/test_clip_cli.py)."""

from __future__ import annotations

import math
import os
import socket

import pytest
import torch
import torch.nn.functional as F

REPORTS = [
    "There is a large mass in the left frontal lobe, measuring about 80 ml.",
    "The tumour does not enhance after gadolinium. Moderate perilesional oedema is present.",
    "Findings: a small right-sided temporal lesion with central necrosis.",
    "No contrast enhancement; extensive surrounding edema.",
]


def normalised(*shape: int, seed: int = 0) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def brute_force_clip_loss(image: torch.Tensor, text: torch.Tensor, scale: float) -> float:
    """Symmetric InfoNCE with explicit loops over the similarity matrix."""
    n = len(image)
    sim = [[scale * float(image[i] @ text[j]) for j in range(n)] for i in range(n)]
    i2t = sum(-sim[i][i] + math.log(sum(math.exp(sim[i][j]) for j in range(n))) for i in range(n)) / n
    t2i = sum(-sim[j][j] + math.log(sum(math.exp(sim[i][j]) for i in range(n))) for j in range(n)) / n
    return (i2t + t2i) / 2


# ---------------------------------------------------------------------------------------------- loss


def test_loss_equals_brute_force_and_temperature_starts_at_clip_value():
    from medseg.losses.clip import ClipLoss

    image, text = normalised(6, 8, seed=1), normalised(6, 8, seed=2)
    loss = ClipLoss()
    assert math.isclose(float(loss.scale().detach()), 1 / 0.07, rel_tol=1e-5)
    out = loss(image, text)
    assert set(out) == {"loss", "loss_i2t", "loss_t2i", "logit_scale"}
    assert math.isclose(float(out["loss"].detach()), brute_force_clip_loss(image, text, 1 / 0.07), rel_tol=1e-5)

    with torch.no_grad():
        loss.logit_scale.fill_(math.log(500.0))  # beyond the cap
    out = loss(image, text)
    assert math.isclose(float(out["logit_scale"]), 100.0, rel_tol=1e-6)
    assert math.isclose(float(out["loss"].detach()), brute_force_clip_loss(image, text, 100.0), rel_tol=1e-5)


def test_temperature_is_learned():
    from medseg.losses.clip import ClipLoss

    loss = ClipLoss()
    loss(normalised(4, 8, seed=1), normalised(4, 8, seed=2))["loss"].backward()
    assert loss.logit_scale.grad is not None and float(loss.logit_scale.grad) != 0.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist

    from medseg.losses.clip import ClipLoss

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        image, text = normalised(8, 6, seed=1), normalised(8, 6, seed=2)  # the global batch, same on every rank
        rows = slice(rank * 4, rank * 4 + 4)
        results = {}
        for local_loss in (False, True):
            local_image = image[rows].clone().requires_grad_(True)  # this rank's share [4, 6]
            local_text = text[rows].clone().requires_grad_(True)
            loss = ClipLoss(local_loss=local_loss)(local_image, local_text)["loss"]
            loss.backward()
            mean = loss.detach().clone()
            dist.all_reduce(mean)
            results[local_loss] = {
                "loss": float(loss), "mean_loss": float(mean) / world,
                "grad_image": local_image.grad / world, "grad_text": local_text.grad / world,  # as DDP averages
            }  # fmt: skip
        torch.save(results, os.path.join(out, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two processes importing torch: about 8 s
def test_ddp_gather_spans_the_global_batch_and_gradients_reach_local_embeddings(tmp_path):
    """Two CPU processes (gloo, localhost): loss and gradients equal the single-process ones on the whole batch."""
    from medseg.losses.clip import ClipLoss

    torch.multiprocessing.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    image = normalised(8, 6, seed=1).requires_grad_(True)
    text = normalised(8, 6, seed=2).requires_grad_(True)
    reference = ClipLoss()(image, text)["loss"]
    reference.backward()
    for rank in (0, 1):
        rows = slice(rank * 4, rank * 4 + 4)
        results = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert math.isclose(results[False]["loss"], float(reference), rel_tol=1e-5)  # full loss on every rank
        for local_loss in (False, True):
            r = results[local_loss]
            assert math.isclose(r["mean_loss"], float(reference), rel_tol=1e-5)
            torch.testing.assert_close(r["grad_image"], image.grad[rows], rtol=1e-4, atol=1e-6)
            torch.testing.assert_close(r["grad_text"], text.grad[rows], rtol=1e-4, atol=1e-6)
    assert math.isclose(brute_force_clip_loss(image.detach(), text.detach(), 1 / 0.07), float(reference), rel_tol=1e-5)


# ---------------------------------------------------------------------------------------------- text


def test_tokenizer_fit_is_the_same_every_time_and_spells_unseen_words():
    from medseg.nets.clip import ReportTokenizer

    vocabularies = [ReportTokenizer.fit(REPORTS * 3, vocab_size=200).tokenizer.get_vocab() for _ in range(5)]
    assert all(v == vocabularies[0] for v in vocabularies)  # tokenizers' WordPieceTrainer differs run to run
    tokenizer = ReportTokenizer.fit(REPORTS, vocab_size=200)
    ids, _ = tokenizer(["Xylophone-shaped zone 42"])  # nothing of it in the reports
    assert tokenizer.tokenizer.token_to_id("[UNK]") not in ids[0].tolist()
    assert tokenizer.decode(ids[0].tolist()) == "xylophone - shaped zone 42"


def test_tokenizer_round_trip_and_travels_in_the_state_dict(tmp_path):
    from medseg.nets.clip import ReportTokenizer, TransformerTextEncoder

    tokenizer = ReportTokenizer.fit(REPORTS * 3, vocab_size=200, context_length=32)
    ids, mask = tokenizer([REPORTS[0], "No necrosis."])
    assert ids.shape == mask.shape and ids.shape[0] == 2 and ids.dtype == torch.long
    assert int(ids[1, -1]) == 0 and not bool(mask[1, -1]) and bool(mask[0].all())  # the short row padded with 0
    assert tokenizer.tokenizer.id_to_token(int(ids[0, 0])) == "[CLS]"
    for text in ("There is a large mass in the left frontal lobe.", "Moderate perilesional oedema is present."):
        row, _ = tokenizer([text])
        assert tokenizer.decode(row[0].tolist()) == text.lower()
        assert tokenizer([tokenizer.decode(row[0].tolist())])[0].tolist() == row.tolist()
    tokenizer.save(tmp_path / "tokenizer.json")
    again = ReportTokenizer.from_file(tmp_path / "tokenizer.json", context_length=32)
    assert torch.equal(again(REPORTS)[0], tokenizer(REPORTS)[0])
    long_ids, _ = tokenizer([" ".join(REPORTS * 5)])
    assert long_ids.shape[1] == 32  # truncated at context_length

    encoder = TransformerTextEncoder(embed_dim=8, width=16, layers=1, heads=2, context_length=32, vocab_size=200)
    encoder.fit_tokenizer(REPORTS)
    fresh = TransformerTextEncoder(embed_dim=8, width=16, layers=1, heads=2, context_length=32, vocab_size=200)
    assert not fresh.tokenizer_fitted
    fresh.load_state_dict(encoder.state_dict())
    encoder.eval(), fresh.eval()
    torch.testing.assert_close(fresh(REPORTS), encoder(REPORTS))


def test_local_tiny_bert_folder_loads_without_network(tmp_path, monkeypatch):
    from transformers import BertConfig, BertModel, BertTokenizerFast

    from medseg.errors import MedsegError
    from medseg.nets.clip import HFTextEncoder

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    words = sorted({w.strip(".,;:").lower() for r in REPORTS for w in r.split()})
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]) + "\n")
    config = BertConfig(vocab_size=5 + len(words), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64)  # fmt: skip
    folder = tmp_path / "bert"
    BertModel(config).save_pretrained(folder)
    BertTokenizerFast(vocab_file=str(vocab)).save_pretrained(folder)

    encoder = HFTextEncoder(str(folder), embed_dim=8, pooling="mean")
    out = encoder(REPORTS[:3])
    assert out.shape == (3, 8)
    out.sum().backward()
    assert encoder.model.embeddings.word_embeddings.weight.grad is not None

    frozen = HFTextEncoder(str(folder), embed_dim=8, freeze=True)
    assert not any(p.requires_grad for p in frozen.model.parameters())
    with pytest.raises(MedsegError, match="no config.json"):
        HFTextEncoder(str(tmp_path / "missing"))


# ---------------------------------------------------------------------------------------------- images


@pytest.mark.parametrize(
    "name", ["ViTImageEncoder", "SwinImageEncoder", "TransformerTextEncoder", "HFTextEncoder", "ReportTokenizer"]
)
def test_class_paths_in_saved_configs_still_resolve(name):
    from jsonargparse.typing import import_object

    assert import_object(f"medseg.nets.clip.{name}").__name__ == name  # as configs and checkpoints name them


def test_vit_encoder_shape_and_size_check():
    from medseg.nets.clip import ViTImageEncoder

    encoder = ViTImageEncoder(img_size=(16, 16, 16), patch_size=8, hidden_size=16, mlp_dim=32, num_layers=1,
                              num_heads=2, embed_dim=8)  # fmt: skip
    assert encoder(torch.randn(2, 4, 16, 16, 16)).shape == (2, 8)
    with pytest.raises(ValueError, match=r"built for img_size \(16, 16, 16\) but got an input of \(16, 16, 24\)"):
        encoder(torch.randn(2, 4, 16, 16, 24))
    with pytest.raises(ValueError, match="must divide"):
        ViTImageEncoder(img_size=(16, 16, 20), patch_size=8)


def test_swin_encoder_is_swin_unetrs_encoder():
    from monai.networks.nets import SwinUNETR

    from medseg.nets.clip import SwinImageEncoder

    encoder = SwinImageEncoder(feature_size=12, embed_dim=8, pool_grid=(1, 1, 1)).eval()
    reference = SwinUNETR(in_channels=4, out_channels=3, feature_size=12)
    encoder.swinViT.load_state_dict(reference.swinViT.state_dict(), strict=True)  # Swin UNETR weights fit
    with torch.no_grad():
        assert encoder(torch.randn(1, 4, 32, 32, 32)).shape == (1, 8)


def test_batch_augmentation_never_flips_left_and_right():
    from medseg.data.reports import augment_batch

    image = torch.zeros(8, 4, 16, 16, 16)
    image[:, :, 2:6, 5:11, 5:11] = 1.0  # a blob on the low-x side (RAS: the patient's left)
    assert augment_batch(image).shape == image.shape
    out = augment_batch(image, intensity=0.0)  # geometry only
    assert not torch.equal(out, image)
    mass = out.sum(dim=(1, 3, 4))  # [B, X]
    assert bool((mass[:, :8].sum(1) > 5 * mass[:, 8:].sum(1)).all())


# ---------------------------------------------------------------------------------------------- zero-shot


class LookupText(torch.nn.Module):
    """A text encoder with a fixed embedding per string."""

    embed_dim = 4

    def __init__(self, table: dict[str, list[float]]) -> None:
        super().__init__()
        self.table = table
        self.anchor = torch.nn.Parameter(torch.zeros(()))

    def forward(self, texts):
        return torch.tensor([self.table[t] for t in texts]) + self.anchor


def test_prompt_ensembles_are_averaged_then_normalised():
    from medseg.modules.clip import ClipModule

    table = {
        "a1": [3.0, 0, 0, 0],
        "a2": [0, 1.0, 0, 0],
        "b1": [0, 0, 2.0, 0],
        "b2": [0, 0, 0, 5.0],
        "b3": [0, 0, 1.0, 1.0],
    }
    module = ClipModule(torch.nn.Linear(2, 4), LookupText(table))
    classes = module.class_embeddings({"A": ["a1", "a2"], "B": ["b1", "b2", "b3"]})  # [2, 4]
    expected_a = F.normalize(
        torch.stack([F.normalize(torch.tensor(table[p]), dim=0) for p in ("a1", "a2")]).mean(0), dim=0
    )
    expected_b = F.normalize(
        torch.stack([F.normalize(torch.tensor(table[p]), dim=0) for p in ("b1", "b2", "b3")]).mean(0), dim=0
    )
    torch.testing.assert_close(classes, torch.stack([expected_a, expected_b]))
    image = F.normalize(torch.tensor([[1.0, 1.0, 0, 0], [0, 0, 1.0, 1.0]]), dim=-1)
    probs = module.zero_shot_probs(image, classes)
    logits = (1 / 0.07) * image @ classes.T
    torch.testing.assert_close(probs, torch.softmax(logits, -1), rtol=1e-5, atol=1e-6)
    assert probs.argmax(1).tolist() == [0, 1]


def test_retrieval_recall_and_auroc_against_brute_force():
    from medseg.metrics.retrieval import auroc, retrieval_recall, zero_shot_metrics

    image, text = normalised(12, 5, seed=3), normalised(12, 5, seed=4)
    text[:4] = image[:4]  # four pairs match exactly
    got = retrieval_recall(image, text, (1, 5))
    sim = (image @ text.T).tolist()
    for k in (1, 5):
        i2t = sum(sorted(range(12), key=lambda j: -sim[i][j]).index(i) < k for i in range(12)) / 12
        t2i = sum(sorted(range(12), key=lambda i: -sim[i][j]).index(j) < k for j in range(12)) / 12
        assert math.isclose(got[f"i2t_recall@{k}"], i2t, abs_tol=1e-6)
        assert math.isclose(got[f"t2i_recall@{k}"], t2i, abs_tol=1e-6)

    scores, positive = [0.1, 0.4, 0.35, 0.8, 0.4], [False, False, True, True, True]
    pairs = [(p, n) for p in range(5) if positive[p] for n in range(5) if not positive[n]]
    brute = sum(1.0 if scores[p] > scores[n] else 0.5 if scores[p] == scores[n] else 0.0 for p, n in pairs) / len(pairs)
    assert math.isclose(auroc(scores, positive), brute)
    probs = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    metrics = zero_shot_metrics(probs, ["yes", "no", "no", "?"], ["yes", "no"])  # "?" is left out
    assert math.isclose(metrics["acc"], 2 / 3, abs_tol=1e-6) and math.isclose(metrics["auroc"], 1.0)
