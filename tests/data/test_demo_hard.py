"""The demo generator's difficulty: the default stays byte for byte what it was; ``difficulty="hard"`` is
seeded and has what real scans have (weak, textured, variable lesions; unlabelled mimics; satellites; blur)."""

from __future__ import annotations

import hashlib

import numpy as np

from medseg.data.cases import MODALITIES
from medseg.data.demo import generate_case

SHAPE = (48, 48, 32)

# sha256 of the default generator's arrays (t1, t1ce, t2, flair, label, affine), computed before the hard
# mode existed: the default must never change. Floating point through numpy/scipy on x86-64 (numpy 2).
DEFAULT_SHA256 = {
    (0, 0): "03bc875bdccc10d2b5671878a987a2c6a5d30f29261479e6c0c55533293a55ad",
    (0, 1): "3151cee1555c777da523f85db0c4793742721244469bc3d8b4d57a910b64cd3b",
}
SEVERAL_SHA256 = "f98d14b4cb8a7813ee8a9d8c41677a557cc9cdbb16b9aad265714b67287b3662"  # seed (3, 1), non-default knobs


def _sha256(case) -> str:
    digest = hashlib.sha256()
    for array in (*(case.images[m] for m in MODALITIES), case.label, case.affine):
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def test_default_is_unchanged():
    for seed, expected in DEFAULT_SHA256.items():
        assert _sha256(generate_case("c", seed=seed, shape=SHAPE)) == expected, f"default case {seed} changed"
    case = generate_case("c", seed=(3, 1), shape=SHAPE, n_lesions=(1, 3), p_enhancing=0.5, skull_stripped=False)
    assert _sha256(case) == SEVERAL_SHA256
