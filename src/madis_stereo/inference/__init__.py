"""Inference: the ``Predictor`` (``predictor``), automatic precision (``precision``), tiled prediction
(``tiling``), ONNX export (``export``) and attention analysis (``attention``)."""
