"""Camera geometry: stereo calibrations of raw camera pairs and their rectification."""
