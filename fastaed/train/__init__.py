"""Stage 4, training: ``train(cfg)`` is the explicit loop of ``loop.py``; ``TrainConfig`` loads YAML configs.

from fastaed.train import TrainConfig, train

summary = train(TrainConfig.from_yaml("configs/train_tiny_flash.yaml", ["optim.lr=1e-3"]))
"""

from fastaed.train.config import ConfigError, TrainConfig
from fastaed.train.loop import train

__all__ = ["ConfigError", "TrainConfig", "train"]
