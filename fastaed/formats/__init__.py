"""Model files on disk: fastaed's own self-describing checkpoints (``native``: ``model.safetensors`` +
``config.json``). Kept out of ``fastaed.model`` so that package stays pure torch."""

from fastaed.formats.native import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    CheckpointError,
    load_model,
    read_checkpoint_meta,
    save_model,
)

__all__ = [
    "CONFIG_FILE",
    "WEIGHTS_FILE",
    "CheckpointError",
    "load_model",
    "read_checkpoint_meta",
    "save_model",
]
