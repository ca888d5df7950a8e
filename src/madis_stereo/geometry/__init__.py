"""Stereo geometry: the rectified camera, depth and point clouds (``camera``); calibrations of raw camera pairs
(``calibration``) and their rectification (``rectify``)."""
