"""Inference: the ``Predictor`` (``predictor``), tiled prediction (``tiling``), ONNX export (``export``) and
attention analysis (``attention``)."""
