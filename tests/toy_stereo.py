"""A tiny stereo dataset for training tests, in memory or written as a ``folder`` dataset.

Each item is a blocky random texture seen by two cameras: ``right[x] = left[x + d]`` for a per-item integer
disparity ``d``, so the left image's pixels at x < d have no match (their GT is +inf), and so has a random
rectangle (GT holes, as in KITTI: the EMA teacher's pseudo labels are used there). Deterministic from
(seed, epoch, index), like ``TrainingDataset``.

Run as a script it is a training entry point that can also dump each rank's final weights (under torchrun):
``python tests/toy_stereo.py CONFIG.yaml [key=value ...] --out DIR [--resume] [--dump DIR]``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.utils.data import Dataset


class ToyStereo(Dataset):
    """Items ``{"left", "right": uint8 [3, H, W], "disparity": float32 [1, H, W], "name"}``.

    ``layout="hwc"`` gives numpy HxWx3 images and HxW disparity instead (the raw dataset format).
    """

    def __init__(self, length: int = 16, size: tuple[int, int] = (64, 128), max_disparity: int = 12,
                 seed: int = 0, layout: str = "chw") -> None:
        self.length, self.size, self.max_disparity, self.seed, self.layout = length, size, max_disparity, seed, layout
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        h, w = self.size
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch * 10_007 + index)
        d = int(torch.randint(1, self.max_disparity + 1, (1,), generator=g))
        big = w + 2 * self.max_disparity
        coarse = torch.randint(0, 256, (3, h // 4, big // 4 + 1), generator=g, dtype=torch.uint8)
        texture = coarse.repeat_interleave(4, 1).repeat_interleave(4, 2)[:, :h, :big]
        left = texture[:, :, self.max_disparity : self.max_disparity + w]
        right = texture[:, :, self.max_disparity + d : self.max_disparity + d + w]
        disp = torch.full((1, h, w), float(d))
        disp[:, :, :d] = float("inf")
        y0, x0 = int(torch.randint(0, h - 8, (1,), generator=g)), int(torch.randint(d, w - 8, (1,), generator=g))
        disp[:, y0 : y0 + 8, x0 : x0 + 8] = float("inf")
        item = {"left": left.contiguous(), "right": right.contiguous(), "disparity": disp, "name": f"toy{index}"}
        if self.layout == "hwc":
            item = {"left": left.permute(1, 2, 0).numpy(), "right": right.permute(1, 2, 0).numpy(),
                    "disparity": disp[0].numpy(), "name": item["name"]}
        return item


def toy_config(**sections) -> dict:
    """A tiny MaDis recipe dict (64x128 crop, batch 2) with section-wise overrides."""
    cfg = {
        "model": {"preset": "tiny", "crop": [64, 128], "dpt_hooks": [4, 5, 6, 7]},
        "data": {"train": [{"name": "toy"}]},
        "madis": {"enabled": True, "mask_ratio": 0.4},
        "teacher": {"momentum": 0.9},
        "optim": {"lr": 3e-4, "batch_size": 2, "max_steps": 12, "warmup_steps": 2},
        "run": {"seed": 0, "log_every": 1, "ckpt_every": 4, "keep_last": 2, "num_workers": 0, "device": "cpu"},
    }
    for name, values in sections.items():
        cfg[name] = {**cfg.get(name, {}), **values}
    return cfg


def write_toy_folder(root: Path, length: int = 16, size: tuple[int, int] = (64, 128)) -> dict:
    """Write ToyStereo items as PNG pairs and PFM disparities (inf holes); return the ``folder`` dataset spec."""
    from madis_stereo.data import write_image, write_pfm

    data = ToyStereo(length, size, layout="hwc")
    for i in range(length):
        item = data[i]
        for view in ("left", "right"):
            (root / view).mkdir(parents=True, exist_ok=True)
            write_image(root / view / f"{i:04d}.png", item[view])
        (root / "disp").mkdir(exist_ok=True)
        write_pfm(root / "disp" / f"{i:04d}.pfm", item["disparity"])
    return {"name": "folder", "root": str(root), "left": "left/*.png", "right": "right/*.png",
            "disparity": "disp/*.pfm"}


def engine_for(**sections):
    """A training ``Engine`` for ``toy_config(**sections)`` on the CPU, its network seeded."""
    import madis_stereo as ms
    from madis_stereo.training import Engine, load_train_config
    from madis_stereo.training.distributed import DistEnv

    cfg = load_train_config(toy_config(**sections))
    torch.manual_seed(0)
    return Engine(ms.StereoModel(cfg.model.arch), cfg, DistEnv(rank=0, world_size=1, local_rank=0,
                                                               device=torch.device("cpu")))


def batch_of(dataset, indices=(0, 1)) -> dict:
    return torch.utils.data.default_collate([dataset[i] for i in indices])


def subprocess_env() -> dict:
    """The environment of a training subprocess: this checkout's src/ and tests/ first, one thread."""
    import os

    root = Path(__file__).resolve().parents[1]
    paths = [str(root / "src"), str(root / "tests"), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "OMP_NUM_THREADS": "1"}


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "madis_stereo", *args]


def main(argv: list[str]) -> int:
    import logging

    from madis_stereo.training import load_train_config, train

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser()
    parser.add_argument("config")
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--out", required=True)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--dump", help="write each rank's final student and teacher weights here")
    args = parser.parse_args(argv)
    cfg = load_train_config(args.config, args.overrides)
    result = train(cfg, out_dir=args.out, resume=args.resume)
    if args.dump:
        rank = int(torch.distributed.get_rank()) if torch.distributed.is_initialized() else _env_rank()
        teacher = result.engine.teacher.state_dict() if result.engine.teacher is not None else {}
        student = {k: v.detach().cpu() for k, v in result.engine.model.state_dict().items()}
        Path(args.dump).mkdir(parents=True, exist_ok=True)
        torch.save({"student": student, "teacher": teacher}, Path(args.dump) / f"rank{rank}.pt")
    return 0


def _env_rank() -> int:
    import os

    return int(os.environ.get("RANK", "0"))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
