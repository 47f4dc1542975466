"""The teacher's transcripts of clips: which clips a teacher can label, and its greedy labels.

Shared by ``fastaed adapt`` (targets for clips without a transcript) and ``distill.replay_manifests``
(every replay clip); kept apart from both so that neither imports the other.
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
from pathlib import Path
from typing import Any

from fastaed.data import errors as E
from fastaed.data.manifest import Utterance, iter_lines, parse_entry


def is_real(raw: dict[str, Any]) -> bool:
    """A recording of real speech (kept whole), not a synthetic clip (sampled): synthetic entries name
    their TTS engine."""
    return "engine" not in raw and "voice" not in raw


def choose_clips(
    manifests: list[Path], english_only: bool, max_clips: int, seed: int, report: E.BadInputReport
) -> list[tuple[Utterance, dict[str, Any]]]:
    """Every real entry and a seeded sample of at most ``max_clips`` synthetic ones, in manifest order.
    Entries a model cannot learn from here (not English for an English-only model, not transcription) are
    counted in ``report``."""
    real, synthetic = [], []
    for manifest in manifests:
        base = str(manifest.parent)
        for line_no, _, line in iter_lines(manifest):
            try:
                raw = json.loads(line)
                # An entry without a transcript is fine here: the teacher will label it.
                labelled = isinstance(raw, dict) and bool(str(raw.get("text") or "").strip())
                obj = raw if labelled or not isinstance(raw, dict) else {**raw, "text": "-"}
                utt = parse_entry(obj, path=str(manifest), line=line_no, base_dir=base)
                if english_only and utt.source_lang != "en":
                    detail = f"source_lang {utt.source_lang!r}: this model is English-only"
                    raise E.BadInputError(E.BAD_FIELD, detail, path=str(manifest), line=line_no,
                                          field="source_lang")  # fmt: skip
                if utt.task != "transcribe":
                    detail = f"task {utt.task!r}: a teacher labels transcription only"
                    raise E.BadInputError(E.BAD_FIELD, detail, path=str(manifest), line=line_no, field="task")
            except E.BadInputError as err:
                E.handle(err, "skip", report)
                continue
            except json.JSONDecodeError as exc:
                err = E.BadInputError(
                    E.MALFORMED_JSON, f"not valid JSON ({exc})", path=str(manifest), line=line_no
                )
                E.handle(err, "skip", report)
                continue
            utt = utt if labelled else dataclasses.replace(utt, text="")
            (real if is_real(raw) else synthetic).append((utt, raw))
    if len(synthetic) > max_clips:
        keep = set(random.Random(seed).sample(range(len(synthetic)), max_clips))
        synthetic = [x for i, x in enumerate(synthetic) if i in keep]
    return real + synthetic


def pseudo_label(
    checkpoint: Path, utts: list[Utterance], threads: int | None, whisper_input: str = "padded"
) -> tuple[dict[int, str], dict[str, int], float]:
    """The teacher's greedy transcripts of ``utts`` (position -> text) on ``whisper_input`` (a Whisper
    front end; "auto" for others), with the loop guard on: a looping output is dropped (counted by guard),
    as is an empty one. Returns (texts, dropped, seconds)."""
    from fastaed.decode.transcribe import DecodeConfig, Transcriber

    if not utts:
        return {}, {}, 0.0
    t0 = time.perf_counter()
    config = DecodeConfig(batch_size=16, device="cpu" if threads else "auto", whisper_input=whisper_input,
                          loop_guard="on", progress=True)  # fmt: skip
    # this process trains next: its heap stays glibc's (inference's keep-the-peak setting is not for training)
    transcriber = Transcriber(checkpoint, config, keep_freed_memory=False)
    result = transcriber.run(utts, on_bad_input="skip", warmup=False)
    by_path = {(t.utterance.manifest, t.utterance.line): t for t in result.transcripts}
    texts, dropped = {}, {"loop": 0, "empty": 0, "unreadable": sum(result.skipped.counts.values())}
    for i, utt in enumerate(utts):
        t = by_path.get((utt.manifest, utt.line))
        if t is None:
            continue
        if t.guard is not None:
            dropped["loop"] += 1
        elif not t.text.strip():
            dropped["empty"] += 1
        else:
            texts[i] = t.text.strip()
    return texts, dropped, time.perf_counter() - t0
