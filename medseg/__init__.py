"""medseg: transformer-based 3-D medical image analysis on MONAI and Lightning.

>>> from medseg import Predictor
>>> predictor = Predictor.from_checkpoint("runs/swin_unetr_demo/checkpoints/last.ckpt")  # doctest: +SKIP
>>> [result] = predictor.predict("scans/BraTS2021_00000", out_dir="predictions")          # doctest: +SKIP
>>> result.label.shape, result.affine                                                      # doctest: +SKIP
"""

__version__ = "0.1.0"
__all__ = ["Predictor", "Prediction"]


def __getattr__(name: str):  # lazy: `import medseg` stays light for the CLI
    if name in __all__:
        from medseg import inference  # the package: Predictor, Prediction

        return getattr(inference, name)
    raise AttributeError(f"module 'medseg' has no attribute {name!r}")
