"""Fine-tuning: what a run takes from the checkpoint named by ``model.init_from``.

A checkpoint written by ``fastaed import whisper`` / ``import nemo`` (or by this trainer) carries its weights,
model config, ``tokenizer/`` and a ``frontend`` entry. A fine-tuning run uses all four: the tokenizer defines
U and the prompt (Whisper's 2 or 4 tokens, Canary's), the front end computes the features the weights
expect, and the run's checkpoints carry both again so ``fastaed transcribe`` and ``eval`` take them as they
are. The checkpoint's other metadata (``extra``: an imported Canary's ``generation`` rule and original NeMo
config, its ``source``) is carried into every checkpoint of the run too, so decoding stops where it did and
``fastaed export nemo`` writes the model back with its own settings.

``model.frontend_input`` switches a Whisper front end between its 30 s padded input (the shapes Whisper was
pre-trained on) and the real frames alone (``unpadded``, the default here: what bucketing needs).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastaed.data.canary_tokenizer import CanaryTokenizer
from fastaed.data.features import FeatureConfig
from fastaed.data.frontend import frontend_config, frontend_dict
from fastaed.data.tokenizer import Tokenizer, is_tokenizer_dir, load_tokenizer
from fastaed.data.whisper_features import WhisperFeatureConfig
from fastaed.data.whisper_tokenizer import WhisperTokenizer
from fastaed.formats import TOKENIZER_DIR, load_model, read_checkpoint_meta, verify_tokenizer
from fastaed.model import EncoderDecoderModel, ModelConfig
from fastaed.train.config import ConfigError, ModelSection

AnyTokenizer = Tokenizer | WhisperTokenizer | CanaryTokenizer
TRAINER_EXTRA = ("step", "epoch", "train_config")  # what each trainer checkpoint writes anew (not carried)


@dataclass(frozen=True)
class Pretrained:
    """The parts of an ``init_from`` checkpoint a run is built from (weights are read when the model is)."""

    path: Path
    model_config: ModelConfig  # as saved (the run applies model.dropout on top)
    tokenizer: AnyTokenizer
    frontend: FeatureConfig | WhisperFeatureConfig  # with model.frontend_input applied
    extra: dict[str, Any] = field(default_factory=dict)  # the checkpoint's metadata a fine-tuned one keeps

    def training_frontend(self, dither: float) -> FeatureConfig | WhisperFeatureConfig:
        """The front end training runs: a log-mel one with the run's dither (Whisper's has none)."""
        if isinstance(self.frontend, FeatureConfig):
            return dataclasses.replace(self.frontend, dither=dither)
        return self.frontend

    @property
    def frontend_entry(self) -> dict[str, Any]:
        """The ``frontend`` entry the run's checkpoints store: the init_from checkpoint's, as it was. Its
        dither acts in training mode only (inference computes the same features whatever it says), and an
        exported ``.nemo`` writes it back as the preprocessor's setting."""
        return frontend_dict(self.frontend)

    def load_weights_into_(self, model: EncoderDecoderModel) -> EncoderDecoderModel:
        """Copy the checkpoint's weights (and saved buffers) into ``model`` (built from the run's config)."""
        model.load_state_dict(load_model(self.path).state_dict(), strict=True)
        return model


def load_pretrained(section: ModelSection) -> Pretrained | None:
    """``section.init_from`` read and checked (None when the run trains from scratch)."""
    if section.init_from is None:
        return None
    path = Path(section.init_from)
    meta = read_checkpoint_meta(path)  # names the file when the folder is not a checkpoint
    tok_dir = path / TOKENIZER_DIR
    if not is_tokenizer_dir(tok_dir):
        raise ConfigError(f"model.init_from: {path} has no tokenizer/ folder (fine-tuning needs the model's)")
    verify_tokenizer(path)  # against the checkpoint's checksums, before it is read
    tokenizer = load_tokenizer(tok_dir)
    if meta.get("tokenizer_identity") not in (None, tokenizer.identity):
        raise ConfigError(f"model.init_from: {tok_dir} is not the tokenizer {path} was saved with")
    frontend = frontend_config(meta.get("frontend"))  # no entry: fastaed's default log-mel
    if isinstance(frontend, WhisperFeatureConfig) and section.frontend_input is not None:
        frontend = dataclasses.replace(frontend, input=section.frontend_input)
    config = ModelConfig.from_dict(meta["model_config"])
    if config.vocab_size < tokenizer.vocab_size:
        raise ConfigError(
            f"model.init_from: {path} has {config.vocab_size} outputs, its tokenizer {tokenizer.vocab_size}"
        )
    extra = {k: v for k, v in (meta.get("extra") or {}).items() if k not in TRAINER_EXTRA}
    return Pretrained(path, config, tokenizer, frontend, extra)
