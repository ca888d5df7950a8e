"""Stereo geometry: camera, depth, point clouds (``camera``)."""
