"""MaDis-Stereo training: losses, EMA teacher, schedule, one-step engine and the resumable, DDP-ready trainer.

    from madis_stereo.training import load_train_config, train
    result = train(load_train_config("configs/tiny_synthetic.yaml", ["optim.max_steps=50"]), out_dir="runs/t")
"""

from madis_stereo.training.config import TrainConfig, load_train_config
from madis_stereo.training.engine import Engine, StepResult
from madis_stereo.training.teacher import EMATeacher
from madis_stereo.training.trainer import Trainer, TrainResult, build_student, train

__all__ = [
    "EMATeacher",
    "Engine",
    "StepResult",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "build_student",
    "load_train_config",
    "train",
]
