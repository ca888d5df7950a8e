"""MP4 videos of a sequence (left image next to its coloured disparity), written with the ffmpeg binary that
ships inside the ``imageio-ffmpeg`` wheel (``pip install madis-stereo[video]``; no system ffmpeg needed)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from madis_stereo.errors import InputError
from madis_stereo.utils.files import atomic_path

__all__ = ["VideoWriter", "side_by_side_frame"]


def side_by_side_frame(left: np.ndarray, colored: np.ndarray) -> np.ndarray:
    """The left image and the coloured disparity side by side, HxW(2W)x3 uint8, padded to even sizes (H.264)."""
    frame = np.concatenate([np.asarray(left)[..., :3], np.asarray(colored)[..., :3]], axis=1)
    h, w = frame.shape[:2]
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)))


class VideoWriter:
    """Frames (HxWx3 uint8, all of one size) -> an H.264 MP4, which appears complete under ``path`` on close."""

    def __init__(self, path: str | os.PathLike, fps: float = 10.0) -> None:
        try:
            import imageio_ffmpeg  # noqa: F401
        except ImportError:
            raise InputError("writing a video needs imageio-ffmpeg: pip install 'madis-stereo[video]'") from None
        if not fps > 0:
            raise InputError(f"--fps must be positive, got {fps}")
        self.path, self.fps = Path(path), float(fps)
        if self.path.suffix.lower() != ".mp4":
            raise InputError(f"{self.path}: the video must be an .mp4 file")
        self._atomic: Any = None
        self._writer: Any = None
        self.size: tuple[int, int] | None = None
        self.frames = 0

    def write(self, frame: np.ndarray) -> None:
        import imageio_ffmpeg

        frame = np.ascontiguousarray(frame, dtype=np.uint8)
        size = (frame.shape[1], frame.shape[0])
        if self._writer is None:
            self._atomic = atomic_path(self.path)
            tmp = self._atomic.__enter__()
            self._writer = imageio_ffmpeg.write_frames(str(tmp), size, fps=self.fps, codec="libx264",
                                                       macro_block_size=1, output_params=["-f", "mp4"])
            self._writer.send(None)  # start ffmpeg
            self.size = size
        elif size != self.size:
            first = f"{self.size[0]}x{self.size[1]}"
            raise InputError(f"{self.path}: video frames must keep one size: {size[0]}x{size[1]} after {first}")
        self._writer.send(frame)
        self.frames += 1

    def close(self) -> Path | None:
        """Finish the file; None when no frame was written."""
        if self._writer is None:
            return None
        self._writer.close()
        self._writer = None
        self._atomic.__exit__(None, None, None)
        return self.path

    def abort(self) -> None:
        """Drop a partly written video (the final path is left untouched)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            err = RuntimeError("video aborted")
            self._atomic.__exit__(RuntimeError, err, None)  # removes the temporary file
