"""Transcription: a checkpoint + tokenizer, audio in, text out, batched by duration, timed as RTFx.

Dimensions: B utterances per batch, N samples, T feature frames, F mel bins, T' encoder frames.

Inputs are sorted by duration (longest first, so the first batch is also the most memory-hungry and any
out-of-memory shows at once) and cut into batches of ``batch_size`` utterances. Each utterance carries its own
prompt (source/target language, task, pnc), so one batch may mix tasks. Audio reading, resampling and
feature extraction run inside the timer (the SPEC's default RTFx protocol): RTFx = audio seconds / wall
seconds, after one untimed warm-up batch, with the device synchronised before the clock is read.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from tqdm.auto import tqdm

from fastaed.data import errors as E
from fastaed.data.audio import audio_info
from fastaed.data.dataset import load_utterance_audio, pad_1d
from fastaed.data.frontend import build_frontend, frontend_config
from fastaed.data.manifest import Utterance, read_manifest
from fastaed.data.tokenizer import Tokenizer, is_tokenizer_dir, load_tokenizer
from fastaed.data.whisper_features import WhisperFeatureConfig
from fastaed.data.whisper_tokenizer import WhisperTokenizer
from fastaed.decode.search import Hypothesis, LoopGuard, beam_search, greedy_search, nemo_limits
from fastaed.formats import TOKENIZER_DIR, load_model, read_checkpoint_meta, verify_tokenizer
from fastaed.model import EncoderDecoderModel
from fastaed.model.onednn import onednn_available, use_onednn
from fastaed.model.quantize import is_quantized, quantize_int8
from fastaed.util.devices import resolve_device, resolve_dtype, synchronize
from fastaed.util.heap import reuse_freed_memory

AnyTokenizer = Tokenizer | WhisperTokenizer  # what load_tokenizer returns
# What an entry's pnc=no asks of a model that has no pnc prompt (Whisper): see ``Transcriber.run``.
PncPolicy = Literal["prompt", "scored"]


@dataclass(frozen=True)
class DecodeConfig:
    """How to decode: the one definition of the decoding defaults (``fastaed transcribe`` / ``eval`` derive
    their flags from these fields)."""

    batch_size: int = field(default=32, metadata={"help": "utterances per batch (sorted by duration)"})
    beam_size: int = field(default=1, metadata={"help": "1 = greedy"})
    length_penalty: float = field(default=1.0, metadata={"help": "GNMT alpha for beam search"})
    nbest: int = field(default=1, metadata={"help": "keep this many hypotheses per input (beam search)"})
    device: str = field(default="auto", metadata={"help": "auto | cpu | cuda | cuda:N"})
    dtype: Literal["auto", "bf16", "fp32", "int8"] = field(
        default="auto", metadata={"help": "auto: bf16 on GPU; int8: CPU, int8 linear layers (dynamic)"}
    )
    cpu_linear: Literal["onednn", "default"] = field(
        default="onednn",
        metadata={"help": "float32 on CPU: linear layers on oneDNN (faster decoding steps) or PyTorch's "
                  "default BLAS"},
    )  # fmt: skip
    num_workers: int = field(
        default=0, metadata={"help": "audio-reading worker processes (0: in the main process)"}
    )
    progress: bool = field(default=True, metadata={"help": "progress bar"})
    whisper_input: Literal["auto", "padded", "unpadded"] = field(
        default="auto", metadata={"help": "Whisper models: 30 s padded input, or the real frames only (auto: "
                                  "the checkpoint's front end)"})  # fmt: skip
    whisper_padding: Literal["auto", "openai", "faster-whisper"] = field(
        default="auto", metadata={"help": "Whisper models: padding convention of padded input (auto: the "
                                  "checkpoint's)"})  # fmt: skip
    loop_guard: Literal["auto", "on", "off"] = field(
        default="auto",
        metadata={"help": "greedy search ends a row that repeats itself or writes more than 6.5 tokens per "
                  "second of audio, and counts it (auto: on, except for padded Whisper and imported NeMo "
                  "models, whose reference engines have no guard)"},
    )  # fmt: skip
    # False: ids only (timing random weights over a vocabulary the tokenizer lacks); benchmarks set it.
    decode_text: bool = field(default=True, metadata={"cli": False})

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.beam_size < 1 or self.nbest < 1:
            raise ValueError("batch_size, beam_size and nbest must be >= 1")
        if self.dtype not in ("auto", "bf16", "fp32", "int8"):
            raise ValueError(f"dtype must be auto, bf16, fp32 or int8, got {self.dtype!r}")
        if self.whisper_input not in ("auto", "padded", "unpadded"):
            raise ValueError(f"whisper_input must be auto, padded or unpadded, got {self.whisper_input!r}")
        if self.cpu_linear not in ("onednn", "default"):
            raise ValueError(f"cpu_linear must be onednn or default, got {self.cpu_linear!r}")
        if self.loop_guard not in ("auto", "on", "off"):
            raise ValueError(f"loop_guard must be auto, on or off, got {self.loop_guard!r}")
        if self.whisper_padding not in ("auto", "openai", "faster-whisper"):
            raise ValueError(
                f"whisper_padding must be auto, openai or faster-whisper, got {self.whisper_padding!r}"
            )


@dataclass
class Transcript:
    """One decoded utterance (the input entry, its best text and the n-best list)."""

    utterance: Utterance
    text: str
    score: float
    nbest: list[tuple[str, float]] = field(default_factory=list)
    guard: str | None = None  # the loop guard that ended it ("repetition", "token_cap"), None: neither

    def to_dict(self) -> dict[str, Any]:
        u = self.utterance
        out = {
            "audio_filepath": u.audio_filepath, "offset": u.offset, "duration": u.duration, "text": self.text,
            "score": self.score, "source_lang": u.source_lang, "target_lang": u.target_lang, "task": u.task,
            "pnc": "yes" if u.pnc else "no",
        }  # fmt: skip
        if u.manifest:
            out |= {"reference": u.target_text, "manifest": u.manifest, "line": u.line}
        if len(self.nbest) > 1:
            out["nbest"] = [{"text": t, "score": s} for t, s in self.nbest]
        if self.guard:
            out["loop_guard"] = self.guard
        return out


@dataclass
class TranscribeResult:
    transcripts: list[Transcript]  # in input order
    audio_seconds: float
    wall_seconds: float  # timed part: warm-up excluded
    skipped: E.BadInputReport
    # Entries asking pnc=no that a model without a pnc prompt (Whisper) wrote cased and punctuated, as it
    # always does: only where the caller said pnc does not change its result (``Transcriber.run(pnc=...)``).
    pnc_not_prompted: int = 0

    @property
    def loops(self) -> dict[str, int]:
        """How many outputs each loop guard ended (none: {})."""
        counts: dict[str, int] = {}
        for t in self.transcripts:
            if t.guard:
                counts[t.guard] = counts.get(t.guard, 0) + 1
        return counts

    @property
    def rtfx(self) -> float:
        return self.audio_seconds / max(self.wall_seconds, 1e-9)


def find_tokenizer(checkpoint: str | Path, tokenizer_dir: str | Path | None = None) -> AnyTokenizer:
    """The tokenizer a checkpoint was trained with, checked against the identity it recorded.

    Looks in order at: ``tokenizer_dir`` if given, ``CHECKPOINT/tokenizer``, the run directory above the
    checkpoint, and the ``data.tokenizer`` path of the training config stored in the checkpoint.
    """
    ckpt = Path(checkpoint)
    meta = read_checkpoint_meta(ckpt)
    want = meta.get("tokenizer_identity")
    train_cfg = (meta.get("extra") or {}).get("train_config") or {}
    candidates = (
        [Path(tokenizer_dir)]
        if tokenizer_dir is not None
        else [ckpt / TOKENIZER_DIR, ckpt.parent / TOKENIZER_DIR, ckpt.parent]
        + ([Path(train_cfg["data"]["tokenizer"])] if train_cfg.get("data", {}).get("tokenizer") else [])
    )
    for cand in candidates:
        if cand == ckpt / TOKENIZER_DIR and cand.is_dir():
            verify_tokenizer(ckpt)  # the checkpoint's own copy: checked against its checksums first
        if is_tokenizer_dir(cand):
            tok = load_tokenizer(cand)
            if want is not None and tok.identity != want:
                if tokenizer_dir is not None:
                    raise ValueError(
                        f"{cand}: tokenizer identity {tok.identity} differs from the {want} that {ckpt} was "
                        "trained with"
                    )
                continue
            return tok
    tried = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(
        f"no tokenizer with identity {want} for {ckpt} (looked in: {tried}); pass --tokenizer DIR"
    )


def load_for_inference(
    checkpoint: str | Path,
    tokenizer_dir: str | Path | None = None,
    device: str = "auto",
    dtype: str = "auto",
    keep_freed_memory: bool = True,
    cpu_linear: str = "onednn",
) -> tuple[EncoderDecoderModel, AnyTokenizer, torch.device, torch.dtype]:
    """Model (eval mode, on the device, in the inference dtype) and its tokenizer. ``int8``: float32 weights
    quantized for CPU (``fastaed.model.quantize``); the returned dtype is then the activations' (float32).
    ``cpu_linear`` "onednn": float32 on CPU runs its linear layers on oneDNN (``fastaed.model.onednn``;
    "default": PyTorch's BLAS). ``keep_freed_memory`` False: a process that goes on to train (pseudo-labels)
    keeps glibc's heap."""
    dev = resolve_device(device)
    if dev.type == "cpu" and keep_freed_memory:
        reuse_freed_memory()  # batched CPU decoding was mostly page faults (fastaed.util.heap)
    tokenizer = find_tokenizer(checkpoint, tokenizer_dir)
    model = load_model(checkpoint, map_location=dev)
    if dtype == "int8":
        if dev.type != "cpu":
            raise ValueError(f"--dtype int8 runs on CPU; the device is {dev} (use bf16 on a GPU)")
        return cpu_kernels(model, "int8", cpu_linear), tokenizer, dev, torch.float32
    torch_dtype = resolve_dtype(dtype, dev)
    model = model.to(torch_dtype).eval()
    if dev.type == "cpu" and torch_dtype == torch.float32:
        model = cpu_kernels(model, "fp32", cpu_linear)
    return model, tokenizer, dev, torch_dtype


def cpu_kernels(model: EncoderDecoderModel, dtype: str, cpu_linear: str) -> EncoderDecoderModel:
    """A float32 CPU ``model`` put on the kernels CPU decoding runs, in place: int8 layers for ``dtype``
    "int8" (``fastaed.model.quantize``); otherwise, with ``cpu_linear`` "onednn" and a build that has it, its
    large linear layers on oneDNN (``fastaed.model.onednn``)."""
    if dtype == "int8":
        return quantize_int8(model)  # type: ignore[return-value]
    if cpu_linear == "onednn" and onednn_available():
        use_onednn(model)
    return model


def utterances_from_audio(
    paths: Sequence[str | Path],
    *,
    source_lang: str,
    target_lang: str,
    task: str,
    pnc: bool,
    on_bad_input: str = "error",
    report: E.BadInputReport | None = None,
) -> list[Utterance]:
    """Whole audio files as utterances with one prompt for all (durations from the file headers).

    A missing, empty or unreadable file (or a directory) raises :class:`BadInputError` naming it, or under
    ``on_bad_input="skip"`` is left out and counted in ``report``, as a bad manifest entry would be.
    """
    out = []
    for p in paths:
        try:
            seconds = _audio_seconds(Path(p))
        except E.BadInputError as err:
            E.handle(err, on_bad_input, report)  # type: ignore[arg-type]
            continue
        out.append(
            Utterance(
                audio_filepath=str(p), duration=seconds, text="", source_lang=source_lang,
                target_lang=target_lang, task=task, pnc=pnc,
            )
        )  # fmt: skip
    return out


def _audio_seconds(path: Path) -> float:
    """Duration from the header; errors name the file itself (there is no manifest line to name)."""
    if path.is_dir():
        raise E.BadInputError(E.MISSING_AUDIO, "a directory, not an audio file", path=str(path))
    if path.is_file() and path.stat().st_size == 0:
        raise E.BadInputError(E.EMPTY_AUDIO, "empty file (0 bytes)", path=str(path))
    try:
        frames, sample_rate, _ = audio_info(path)
    except E.BadInputError as err:
        raise err.with_location(str(path), None) from None
    if frames == 0:
        raise E.BadInputError(E.EMPTY_AUDIO, "no samples", path=str(path))
    return frames / sample_rate


def utterances_from_manifest(
    path: str | Path, on_bad_input: str, report: E.BadInputReport
) -> list[Utterance]:
    return list(read_manifest(path, on_bad_input=on_bad_input, report=report))  # type: ignore[arg-type]


class _AudioSet(torch.utils.data.Dataset):
    """Waveforms of utterances; a bad file becomes ``None`` with its error (the caller applies the policy)."""

    def __init__(self, utterances: Sequence[Utterance]):
        self.utterances = utterances

    def __len__(self) -> int:
        return len(self.utterances)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, E.BadInputError | None]:
        try:
            return i, load_utterance_audio(self.utterances[i]), None
        except E.BadInputError as err:
            return i, None, err


def _collate(items: list) -> list:
    return items


class Transcriber:
    """Holds a model, its tokenizer and the feature front end; :meth:`run` transcribes utterances."""

    def __init__(
        self,
        checkpoint: str | Path,
        config: DecodeConfig | None = None,
        tokenizer_dir: str | Path | None = None,
        keep_freed_memory: bool = True,  # False in a process that trains afterwards (fastaed.util.heap)
    ):
        self.config = config or DecodeConfig()
        self.model, self.tokenizer, self.device, self.dtype = load_for_inference(
            checkpoint,
            tokenizer_dir,
            self.config.device,
            self.config.dtype,
            keep_freed_memory,
            self.config.cpu_linear,
        )
        meta = read_checkpoint_meta(checkpoint)
        self.frontend = self._frontend(meta.get("frontend"))
        self.suppress, self.suppress_at_start = self._suppression()
        # An imported NeMo checkpoint stops generating where NeMo would (``fastaed.formats.nemo``).
        self.generation = (meta.get("extra") or {}).get("generation")

    @classmethod
    def from_model(
        cls,
        model: EncoderDecoderModel,
        tokenizer: AnyTokenizer,
        config: DecodeConfig | None = None,
        frontend: dict[str, Any] | None = None,
        generation: dict[str, Any] | None = None,
    ) -> Transcriber:
        """Wrap an in-memory model (benchmarks, tests): same device and dtype as its parameters.
        ``frontend``: a checkpoint's ``frontend`` entry (None: fastaed's default log-mel); ``generation``: its
        ``extra.generation`` length rule (None: fastaed's)."""
        self = cls.__new__(cls)
        self.config = config or DecodeConfig()
        self.model, self.tokenizer = model.eval(), tokenizer
        param = next(model.parameters())
        self.device, self.dtype = param.device, param.dtype
        self.frontend = self._frontend(frontend)
        self.suppress, self.suppress_at_start = self._suppression()
        self.generation = generation
        return self

    def _frontend(self, spec: dict[str, Any] | None) -> torch.nn.Module:
        """The checkpoint's front end (``spec``: its ``frontend`` entry), with this config's Whisper input
        mode and padding convention when they are not ``auto``."""
        cfg = frontend_config(spec)
        c = self.config
        if isinstance(cfg, WhisperFeatureConfig):
            overrides = {"input": c.whisper_input, "padding": c.whisper_padding}
            cfg = dataclasses.replace(cfg, **{k: v for k, v in overrides.items() if v != "auto"})
        elif cfg.dither:
            cfg = dataclasses.replace(cfg, dither=0.0)
        return build_frontend(cfg).to(self.device).eval()

    def _batches(self, utterances: Sequence[Utterance], usable: list[int]) -> list[list[int]]:
        order = sorted(usable, key=lambda i: -utterances[i].duration)
        size = self.config.batch_size
        return [order[i : i + size] for i in range(0, len(order), size)]

    @property
    def precision(self) -> str:
        """What reports name: ``int8`` for a quantized model, else its dtype (``float32``, ``bfloat16``)."""
        return "int8" if is_quantized(self.model) else str(self.dtype).removeprefix("torch.")

    @property
    def padded_whisper(self) -> bool:
        """Whisper fed its 30 s padded window: every input costs the encoder that whole window."""
        cfg = getattr(self.frontend, "config", None)
        return isinstance(cfg, WhisperFeatureConfig) and cfg.input == "padded"

    @property
    def loop_guard(self) -> LoopGuard | None:
        """The guard greedy search runs with (``DecodeConfig.loop_guard``); None when off. ``auto`` leaves
        it off where a reference engine decodes without one (padded Whisper: faster-whisper, openai-whisper;
        imported NeMo models: NeMo), so outputs stay theirs, and turns it on everywhere else."""
        choice = self.config.loop_guard
        if choice == "off":
            return None
        if choice == "auto" and (self.padded_whisper or (self.generation or {}).get("rule") == "nemo"):
            return None
        return LoopGuard()

    @property
    def family(self) -> str:
        """The model family, as messages name it: ``Whisper``, ``English-only Whisper``, ``Canary`` or
        ``fastaed`` (a model trained here: fastaed's Canary-style prompt)."""
        tok = self.tokenizer
        if isinstance(tok, WhisperTokenizer):
            return "Whisper" if tok.multilingual else "English-only Whisper"
        return "Canary" if type(tok).__name__ == "CanaryTokenizer" else "fastaed"

    def check_prompt(self, u: Utterance, *, pnc: PncPolicy = "prompt") -> None:
        """Raise :class:`BadInputError` (naming the field) for a prompt this model cannot follow.

        The tokenizer refuses what it has no token for (a language, a task: an English-only Whisper cannot
        translate, and Whisper translates into English only). Whisper's prompt has no target language and no
        pnc token, so two more requests would be ignored silently and are refused here: ``transcribe`` into a
        ``target_lang`` other than the spoken one, and ``pnc=no`` (Whisper always writes cased, punctuated
        text) unless ``pnc="scored"``: the caller scores after a normaliser that removes casing and
        punctuation from both sides, so the field only describes the reference.
        """
        self.tokenizer.utterance_prompt(u)
        if not isinstance(self.tokenizer, WhisperTokenizer):
            return
        where = {"path": u.manifest or None, "line": u.line or None}
        if u.task == "transcribe" and u.target_lang != u.source_lang:
            raise E.BadInputError(
                E.BAD_FIELD, f"{u.target_lang!r} differs from source_lang {u.source_lang!r}: {self.family} "
                "models transcribe into the spoken language (task translate gives English)",
                field="target_lang", **where,
            )  # fmt: skip
        if not u.pnc and pnc == "prompt":
            raise E.BadInputError(
                E.BAD_FIELD, f"pnc 'no' cannot be honoured: {self.family} models have no pnc prompt and "
                "always write cased, punctuated text", field="pnc", **where,
            )  # fmt: skip

    def usable(
        self,
        utterances: Sequence[Utterance],
        on_bad_input: str,
        report: E.BadInputReport,
        pnc: PncPolicy,
        *,
        any_length: bool = False,
    ) -> list[int]:
        """Indices of the utterances whose prompt this model can follow (a language it lacks, or a request it
        cannot honour, is bad input, found here before any decoding rather than by the batch it lands in).
        Without ``any_length`` (long-form decoding) a clip longer than Whisper's window is bad input too."""
        usable = []
        window = None if any_length else self.max_seconds()
        for i, u in enumerate(utterances):
            try:
                self.check_prompt(u, pnc=pnc)
                if window is not None and u.duration > window:
                    raise E.BadInputError(
                        E.BAD_FIELD, f"{u.duration:.2f} s is longer than this Whisper model's {window:.0f} s "
                        "window (fastaed.decode.longform decodes longer audio)", path=u.manifest, line=u.line,
                        field="duration",
                    )  # fmt: skip
            except E.BadInputError as err:
                if not u.manifest:  # an audio file given directly: name it, as there is no manifest line
                    err = E.BadInputError(err.reason, err.detail, path=u.audio_filepath, field=err.field)
                E.handle(err, on_bad_input, report)  # type: ignore[arg-type]
                continue
            usable.append(i)
        return usable

    def max_seconds(self) -> float | None:
        """Longest input the model takes (Whisper: one 30 s window), None if unbounded."""
        cfg = getattr(self.frontend, "config", None)
        if not isinstance(cfg, WhisperFeatureConfig):
            return None
        return self.model.config.encoder.max_positions * 2 * cfg.hop_length / cfg.sample_rate

    def prompts(self, utterances: Sequence[Utterance]) -> torch.Tensor:
        """(B, P) prompt ids, one row per utterance from its own language/task/pnc fields."""
        rows = [self.tokenizer.utterance_prompt(u) for u in utterances]
        return torch.tensor(rows, dtype=torch.long, device=self.device)

    @torch.no_grad()
    def decode_waveforms(
        self,
        waves: list[torch.Tensor],
        utterances: Sequence[Utterance],
        force_lengths: torch.Tensor | None = None,
    ) -> list[list[Hypothesis]]:
        """Features -> encoder -> search for one batch; returns the n-best of each row, best first."""
        enc, enc_lens = self.encode_waveforms(waves)
        seconds = torch.tensor([len(w) / self.frontend.config.sample_rate for w in waves])
        return self.search(enc, enc_lens, utterances, force_lengths, seconds=seconds)

    @torch.no_grad()
    def encode_waveforms(self, waves: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """B waveforms -> encoder states (B, T', De) and their lengths (B,)."""
        audio, audio_lens = pad_1d(waves)
        audio, audio_lens = audio.to(self.device), audio_lens.to(self.device)
        feats, feat_lens = self.frontend(audio, audio_lens)
        return self.model.encode(feats.to(self.dtype), feat_lens)

    @torch.no_grad()
    def search(
        self,
        enc: torch.Tensor,
        enc_lens: torch.Tensor,
        utterances: Sequence[Utterance],
        force_lengths: torch.Tensor | None = None,
        *,
        seconds: torch.Tensor | None = None,
    ) -> list[list[Hypothesis]]:
        """Greedy or beam search from encoder states (B, T', De) with each utterance's own prompt;
        ``seconds``: (B,) audio seconds of each row (the loop guard's token cap; None: no cap)."""
        prompts = self.prompts(utterances)
        eos = self.tokenizer.eos_id
        c = self.config
        suppress, at_start = self.suppress, self.suppress_at_start
        if c.beam_size == 1:
            limits, rule = None, self.generation or {}
            if rule.get("rule") == "nemo":
                limits = nemo_limits(self.model, enc, prompts.shape[1], rule["max_generation_delta"])
            guard = self.loop_guard
            caps = guard.cap(seconds).to(self.device) if guard is not None and seconds is not None else None
            hyps = greedy_search(self.model, enc, enc_lens, prompts, eos, force_lengths=force_lengths,
                                 suppress=suppress, suppress_at_start=at_start, limits=limits,
                                 loop_guard=guard, token_caps=caps)  # fmt: skip
            return [[h] for h in hyps]
        return beam_search(
            self.model, enc, enc_lens, prompts, eos,
            beam_size=c.beam_size, alpha=c.length_penalty, nbest=c.nbest,
            suppress=suppress, suppress_at_start=at_start,
        )  # fmt: skip

    def _suppression(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The tokenizer's ids never emitted, and not emitted first (Whisper's), on the device, built once."""

        def ids(values: Sequence[int] | None) -> torch.Tensor | None:
            return torch.tensor(values, dtype=torch.long, device=self.device) if values else None

        tok = self.tokenizer
        return ids(getattr(tok, "suppress_ids", None)), ids(getattr(tok, "suppress_at_start_ids", None))

    def run(
        self,
        utterances: Sequence[Utterance],
        *,
        on_bad_input: str = "error",
        force_lengths: Callable[[Utterance], int] | None = None,
        warmup: bool = True,
        pnc: PncPolicy = "scored",
    ) -> TranscribeResult:
        """Transcribe ``utterances``; results in input order, the bad ones skipped (counted) or raised.

        ``pnc``: what a ``pnc=no`` entry means to a model without a pnc prompt (Whisper). ``"prompt"``: a
        request for lower-case output without punctuation, which it cannot honour: bad input
        (``fastaed transcribe``). ``"scored"`` (default: scoring after a normaliser that removes casing and
        punctuation): a description of the reference; the entry is decoded as the model writes and counted in
        ``TranscribeResult.pnc_not_prompted``."""
        report = E.BadInputReport()
        usable = self.usable(utterances, on_bad_input, report, pnc)
        batches = self._batches(utterances, usable)
        audio = _AudioSet(utterances)
        if warmup and batches:  # untimed: first-call allocations, kernel selection, thread-pool start
            loaded = [audio[i] for i in batches[0]]
            kept = [(utterances[i], w) for i, w, err in loaded if err is None]  # bad ones: counted below
            if kept:
                first = [u for u, _ in kept]
                self.decode_waveforms([w for _, w in kept], first, self._forced(first, force_lengths))
        loader = torch.utils.data.DataLoader(
            audio, batch_sampler=batches, collate_fn=_collate,
            num_workers=self.config.num_workers,
        )  # fmt: skip
        results: dict[int, Transcript] = {}
        audio_seconds = 0.0
        total = sum(map(len, batches))
        bar = tqdm(total=total, desc="transcribe", unit="utt", disable=not self.config.progress)
        synchronize(self.device)
        t0 = time.perf_counter()
        for items in loader:
            kept = []
            for i, wave, err in items:
                if err is not None:
                    E.handle(err, on_bad_input, report)  # type: ignore[arg-type]
                else:
                    kept.append((i, wave))
            bar.update(len(items))
            if not kept:
                continue
            batch_utts = [utterances[i] for i, _ in kept]
            forced = self._forced(batch_utts, force_lengths)
            nbests = self.decode_waveforms([w for _, w in kept], batch_utts, forced)
            for (i, wave), hyps in zip(kept, nbests, strict=True):
                audio_seconds += len(wave) / self.frontend.config.sample_rate
                texts = [(self._text(h.tokens), h.score) for h in hyps]
                results[i] = Transcript(utterances[i], texts[0][0], texts[0][1], texts, hyps[0].guard)
        synchronize(self.device)
        wall = time.perf_counter() - t0
        bar.close()
        ordered = [results[i] for i in sorted(results)]
        whisper = isinstance(self.tokenizer, WhisperTokenizer)
        unprompted = sum(not t.utterance.pnc for t in ordered) if whisper else 0
        return TranscribeResult(ordered, audio_seconds, wall, report, unprompted)

    def _text(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids) if self.config.decode_text else ""

    def _forced(
        self, utts: Sequence[Utterance], fn: Callable[[Utterance], int] | None
    ) -> torch.Tensor | None:
        if fn is None:
            return None
        return torch.tensor([fn(u) for u in utts], dtype=torch.long, device=self.device)


def write_jsonl(transcripts: Sequence[Transcript], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for t in transcripts:
            f.write(json.dumps(t.to_dict(), ensure_ascii=False) + "\n")
    return path
