"""Whole-scan inference from trained checkpoints: segmentation (:class:`Predictor`), lesion boxes
(:mod:`medseg.inference.detect`), export to ONNX / TorchScript (:mod:`medseg.inference.export`), and
the one checkpoint loader they share (:mod:`medseg.inference.checkpoint`)."""

from medseg.inference.segment import Prediction, Predictor

__all__ = ["Prediction", "Predictor"]
