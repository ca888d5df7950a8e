"""Texture sources: real images from installed packages, never the Motorcycle evaluation pair.

The Middlebury Motorcycle pair (scikit-image's ``motorcycle_*`` files) scores the bundled model; a texture
made from it would leak the evaluation scene into training. Checked by file name and by content: the
SIFT features of every source (and of generated textures) are matched against the pair's left view, which
finds copies even when they are cropped, scaled, rotated, mirrored or recoloured.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from madis_stereo.data.synthetic import textures as T

ROOT = Path(__file__).resolve().parents[1]
SHARED = 20  # features of an image found in the Motorcycle view under one similarity transform: a copy
# (unrelated images share at most ~4 by chance; a shrunk, rotated, recoloured crop of the pair 40-450)


def _grey(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image


@functools.lru_cache(maxsize=1)
def _sift() -> cv2.SIFT:
    return cv2.SIFT_create(nfeatures=1000)


@functools.lru_cache(maxsize=1)
def _motorcycle_features() -> tuple:
    import skimage.data

    return _sift().detectAndCompute(_grey(skimage.data.stereo_motorcycle()[0]), None)


def motorcycle_features(image: np.ndarray) -> int:
    """How many SIFT features of ``image`` (or of its mirror image) map onto the Motorcycle left view under
    one similarity transform (RANSAC inliers): invariant to crops, scale, rotation and colour changes."""
    ref_points, ref_desc = _motorcycle_features()
    matcher = cv2.BFMatcher(cv2.NORM_L2)
    best = 0
    for grey in (_grey(image), np.ascontiguousarray(_grey(image)[:, ::-1])):
        points, desc = _sift().detectAndCompute(grey, None)
        if desc is None or len(points) < 3:
            continue
        unique: dict[int, cv2.DMatch] = {}  # one match per Motorcycle feature (no many-to-one piles)
        for pair in matcher.knnMatch(desc, ref_desc, k=2):
            if len(pair) == 2 and pair[0].distance < 0.75 * pair[1].distance:
                m = pair[0]
                if m.trainIdx not in unique or m.distance < unique[m.trainIdx].distance:
                    unique[m.trainIdx] = m
        if len(unique) < 3:
            continue
        src = np.float32([points[m.queryIdx].pt for m in unique.values()])
        dst = np.float32([ref_points[m.trainIdx].pt for m in unique.values()])
        matrix, inliers = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=3.0)
        if matrix is not None and 0.1 < float(np.hypot(matrix[0, 0], matrix[1, 0])) < 10:
            best = max(best, int(inliers.sum()))
    return best


def _derived_from_motorcycle() -> np.ndarray:
    """A texture someone might make from the pair: a crop of the right view, shrunk, colour-changed."""
    import skimage.data

    right = skimage.data.stereo_motorcycle()[1][60:460, 120:700]
    small = cv2.resize(right, None, fx=0.62, fy=0.62, interpolation=cv2.INTER_AREA)
    gamma = np.round(255 * (np.arange(256) / 255) ** 0.7).astype(np.uint8)
    return cv2.LUT(cv2.multiply(small, (1.2, 0.9, 0.7, 0)), gamma)


def test_the_content_check_finds_the_pair_and_images_derived_from_it():
    import skimage.data

    right = skimage.data.stereo_motorcycle()[1]
    derived = _derived_from_motorcycle()
    turned = cv2.warpAffine(derived, cv2.getRotationMatrix2D((200, 150), 37, 0.8), (derived.shape[1], derived.shape[0]))
    for image in (right, derived, np.ascontiguousarray(turned[::-1, ::-1]), right[100:260, 300:540]):
        assert motorcycle_features(image) > SHARED


def test_no_texture_source_is_the_motorcycle_pair_by_name():
    import skimage

    evaluation = {p.resolve() for p in (Path(skimage.__file__).parent / "data").glob("motorcycle*")}
    assert len(evaluation) == 3  # left, right, disparity: the names this check relies on
    available = T.texture_sources()
    assert len(available) >= 23  # scikit-image and matplotlib are core dependencies
    for source in T.TEXTURE_SOURCES:
        assert "motorcycle" not in source.file.lower(), source.name
        path = T.source_path(source)
        assert path is None or path.resolve() not in evaluation, source.name


def test_no_training_recipe_names_the_motorcycle_pair():
    for recipe in sorted((ROOT / "configs").glob("*.yaml")):
        data = yaml.safe_load(recipe.read_text()).get("data") or {}
        assert not re.search("motorcycle", yaml.safe_dump(data.get("train")), re.I), recipe.name


@pytest.mark.parametrize("index", range(len(T.TEXTURE_SOURCES)))
def test_no_texture_source_contains_a_motorcycle_patch(index):
    source = T.TEXTURE_SOURCES[index]
    if source not in T.texture_sources():
        pytest.skip(f"{source.package} is not installed")
    image = T.natural_images()[T.texture_sources().index(source)]
    assert motorcycle_features(image) <= SHARED, source.name


def test_generated_natural_textures_never_match_a_motorcycle_patch():
    rng = np.random.default_rng(5)
    for _ in range(12):
        texture = T._natural_texture(rng, 160, 240)
        assert texture.shape == (160, 240, 3) and texture.dtype == np.uint8
        assert motorcycle_features(texture) <= SHARED
