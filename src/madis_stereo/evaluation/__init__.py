"""Evaluation: per-image metrics (``metrics``), benchmark protocols (``protocols``), dataset evaluation and
submission files (``evaluate``), and the classical SGBM baseline (``baselines``)."""
