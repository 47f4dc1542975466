"""Model files on disk: fastaed's own self-describing checkpoints (``native``: ``model.safetensors`` +
``config.json`` + ``checksums.json``). Kept out of ``fastaed.model`` so that package stays pure torch."""

from fastaed.formats.native import (
    CHECKSUMS_FILE,
    CONFIG_FILE,
    TOKENIZER_DIR,
    WEIGHTS_FILE,
    CheckpointError,
    UnverifiedCheckpointWarning,
    load_model,
    read_checkpoint_meta,
    save_model,
    verify_checksums,
    verify_tokenizer,
    write_checksums,
)

__all__ = [
    "CHECKSUMS_FILE",
    "CONFIG_FILE",
    "TOKENIZER_DIR",
    "WEIGHTS_FILE",
    "CheckpointError",
    "UnverifiedCheckpointWarning",
    "load_model",
    "read_checkpoint_meta",
    "save_model",
    "verify_checksums",
    "verify_tokenizer",
    "write_checksums",
]
