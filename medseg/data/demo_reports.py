"""Reports for the demo cases, written from each case's own ground truth (``demo_truth.json``): the pairs
file :class:`medseg.data.reports.ReportDataModule` trains CLIP-style models on, with ``labels`` (size,
hemisphere, lobe, enhancing, ...) that zero-shot classification is scored against."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medseg.errors import LayoutError
from medseg.io import write_atomic

REPORTS_FILE = "reports.jsonl"  # what write_demo_reports writes beside demo_truth.json


_NOUNS = ("lesion", "mass", "tumour", "tumor")


_SIZE_WORDS = {"small": ("small",), "medium": ("medium-sized", "intermediate-sized"), "large": ("large", "bulky")}


_LOCATION = (
    "There is {a} {size} {noun} in the {side} {lobe} lobe, measuring about {ml} ml.",
    "{A} {size} {noun} ({ml} ml) is seen in the {lobe} lobe of the {side} hemisphere.",
    "{Side} {lobe} {noun}, {size}, approximately {ml} ml in volume.",
    "The {noun} lies in the {side} {lobe} lobe and is {size} (about {ml} ml).",
    "{A} {size} {side}-sided {lobe} {noun} is present, volume {ml} ml.",
)


_ENHANCEMENT = {
    True: (
        "It shows contrast enhancement.",
        "The {noun} enhances after gadolinium.",
        "There is avid enhancement on the post-contrast T1 images.",
        "Enhancing tumour is present.",
    ),
    False: (
        "There is no contrast enhancement.",
        "The {noun} does not enhance after gadolinium.",
        "No enhancing component is seen on post-contrast T1.",
        "It is non-enhancing.",
    ),
}


_CORE = {  # (enhancing, label 1 present): what label 1 looks like depends on enhancement
    (True, True): ("There is central necrosis.", "A necrotic centre is surrounded by an enhancing rim.",
                   "The {noun} has a necrotic core."),
    (True, False): ("No necrosis is seen.", "The enhancing core is solid, without necrosis.",
                    "There is no necrotic component."),
    (False, True): ("A solid non-enhancing core is present, without necrosis.",
                    "There is a non-enhancing tumour core; no necrosis."),
    (False, False): ("No solid tumour core or necrosis is seen; the abnormality is signal change only.",
                     "There is no necrosis and no solid core."),
}  # fmt: skip


_EDEMA = {
    "minimal": ("There is minimal surrounding edema.", "Little perilesional oedema.",
                "Only a thin rim of FLAIR hyperintensity surrounds it."),
    "moderate": ("There is moderate surrounding edema.", "Moderate perilesional oedema is present.",
                 "Moderate FLAIR hyperintensity surrounds the {noun}."),
    "extensive": ("There is extensive surrounding edema.", "Extensive vasogenic oedema is present.",
                  "Marked FLAIR hyperintensity extends widely around the {noun}."),
}  # fmt: skip


_HEADERS = ("", "", "Findings: ", "MRI brain: ")


_IMPRESSION = "Impression: {side} {lobe} {enh} {noun}."


def size_class(volume_ml: float, thresholds_ml: Sequence[float]) -> str:
    """``small`` below ``thresholds_ml[0]``, ``large`` from ``thresholds_ml[1]``, else ``medium``."""
    return "small" if volume_ml < thresholds_ml[0] else "large" if volume_ml >= thresholds_ml[1] else "medium"


def lesion_labels(lesion: dict, thresholds_ml: Sequence[float]) -> dict[str, str]:
    """Class labels of one demo lesion: what zero-shot prompts are scored against."""
    return {
        "hemisphere": lesion["hemisphere"],
        "lobe": lesion["lobe"],
        "enhancing": "yes" if lesion["enhancing"] else "no",
        "necrosis": "yes" if lesion["enhancing"] and lesion["necrotic"] else "no",
        "edema": lesion["edema_extent"],
        "size": size_class(lesion["volume_ml"], thresholds_ml),
    }


def demo_report(lesions: list[dict], rng: random.Random, thresholds_ml: Sequence[float]) -> str:
    """A report of a demo case's lesions (``demo_truth.json`` entries), phrased at random by ``rng``."""
    header = rng.choice(_HEADERS)
    if not lesions:
        return header + rng.choice(("No focal lesion is seen.", "No tumour is identified.", "Normal study."))
    parts = [] if len(lesions) == 1 else [f"There are {len(lesions)} lesions."]
    for number, lesion in enumerate(lesions, 1):
        noun, side = rng.choice(_NOUNS), lesion["hemisphere"]
        size = rng.choice(_SIZE_WORDS[size_class(lesion["volume_ml"], thresholds_ml)])
        article = "an" if size[0] in "aeiou" else "a"
        words = {"noun": noun, "side": side, "Side": side.capitalize(), "lobe": lesion["lobe"], "size": size,
                 "ml": f"{lesion['volume_ml']:.0f}", "a": article, "A": article.capitalize()}  # fmt: skip
        location = rng.choice(_LOCATION).format(**words)
        others = [
            rng.choice(_ENHANCEMENT[bool(lesion["enhancing"])]),
            rng.choice(_CORE[bool(lesion["enhancing"]), bool(lesion["necrotic"])]),
            rng.choice(_EDEMA[lesion["edema_extent"]]),
        ]
        others = [s.format(**words) for s in others]
        rng.shuffle(others)
        sentences = [location, *others] if rng.random() < 0.6 else rng.sample([location, *others], 4)
        prefix = f"Lesion {number}: " if len(lesions) > 1 else ""
        parts.append(prefix + " ".join(sentences))
    if rng.random() < 0.5:
        largest = max(lesions, key=lambda lesion: lesion["volume_ml"])
        enh = "enhancing" if largest["enhancing"] else "non-enhancing"
        parts.append(
            _IMPRESSION.format(side=largest["hemisphere"], lobe=largest["lobe"], enh=enh, noun=rng.choice(_NOUNS))
        )
    return header + " ".join(parts)


def volume_terciles(truth: dict) -> tuple[float, float]:
    """The 1/3 and 2/3 quantiles of the lesion volumes (ml) in a ``demo_truth.json`` mapping."""
    volumes = [lesion["volume_ml"] for entry in truth.values() for lesion in entry["lesions"]]
    if not volumes:
        return (0.0, float("inf"))
    low, high = np.quantile(volumes, [1 / 3, 2 / 3])
    return float(low), float(high)


def write_demo_reports(
    root: str | Path, seed: int = 0, size_thresholds_ml: Sequence[float] | None = None, filename: str = REPORTS_FILE
) -> Path:
    """Write ``root/reports.jsonl``: one report per demo case, from the case's own ``demo_truth.json``.

    Each report states, per lesion, hemisphere and lobe, size (a word and the volume in ml), enhancement or
    not, necrosis or not (or, without enhancement, a non-enhancing core or none), and the extent of edema,
    in varied phrasings (templates, synonyms, sentence order; an impression line half the time) drawn from
    ``(seed, case_id)``. Size words: ``small`` / ``medium`` / ``large`` split at ``size_thresholds_ml``
    (default: the terciles of this file's lesion volumes; pass the training set's to a held-out set).
    Each line also holds ``labels`` of the largest lesion (see :func:`lesion_labels`). Returns the path.
    """
    root = Path(root)
    truth_path = root / "demo_truth.json"
    if not truth_path.is_file():
        raise LayoutError(f"{root}: no demo_truth.json (write demo cases first: medseg demo-data --out {root})")
    truth = json.loads(truth_path.read_text(encoding="utf-8"))
    thresholds = tuple(size_thresholds_ml) if size_thresholds_ml is not None else volume_terciles(truth)
    lines = []
    for case_id in sorted(truth):
        lesions = truth[case_id]["lesions"]
        rng = random.Random(f"{seed}:{case_id}")
        line = {"case_id": case_id, "report": demo_report(lesions, rng, thresholds)}
        if lesions:
            line["labels"] = lesion_labels(max(lesions, key=lambda lesion: lesion["volume_ml"]), thresholds)
        lines.append(json.dumps(line))
    return write_atomic(root / filename, "\n".join(lines) + "\n")
