"""Replay: audio a fine-tune must keep transcribing as the original did, labelled by the original.

The distillation terms (``fastaed.train.distill``) hold the student to the teacher only on the audio it
trains on. In a fine-tune that audio is the new domain, so the model still drifts on everything else
(measured: a tiny.en fine-tuned on synthetic speech with the terms kept pocketsphinx within a point of the
original but lost 3 points on the Asterisk prompts). ``distill.replay_manifests`` names other audio (real
recordings of the kind the model must keep working on; transcripts not needed) that the run trains on beside
``data.train_manifests``: before the first step rank 0 transcribes each clip with the teacher on its own
input (greedy, loop guard on) and writes ``out_dir/replay/<k>-<name>.jsonl`` with that text, so each replay
clip carries the cross-entropy on the teacher's output and the KL and state terms against the teacher.

- A labelled replay set is labelled again by the teacher: replay keeps the teacher's behaviour; references
  belong in ``data.train_manifests``.
- A clip whose pseudo-label the loop guard had to end, or an empty one, is left out and counted; so is an
  entry the teacher cannot be asked for (not English for an English-only model, not transcription).
- ``PATH:WEIGHT`` weights the replay set against the training manifests (``fastaed.sampling.weights``).
- The labels are reused while the teacher's weights, its input and the manifest's contents are unchanged
  (a key file beside each); anything else relabels.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from fastaed.data import errors as E
from fastaed.data.manifest import ManifestSpec
from fastaed.formats.native import write_atomic
from fastaed.train import distributed as D
from fastaed.train.config import TrainConfig

REPLAY_DIR = "replay"
WHISPER_INPUT = {"padded": "padded", "unpadded": "unpadded", "native": "auto"}


def replay_specs(cfg: TrainConfig) -> tuple[list[ManifestSpec], dict[str, Any]]:
    """The teacher-labelled replay manifests of ``cfg`` (rank 0 writes them, the others read them), and a
    report per replay manifest: clips kept, clips left out and why, labelling seconds."""
    d = cfg.distill
    if not d.replay_manifests:
        return [], {}
    out_dir = Path(cfg.runtime.out_dir) / REPLAY_DIR
    specs, report = [], {}
    with D.rank0_first():  # rank 0 labels; the others find its keys matching and read the same files
        for k, arg in enumerate(d.replay_manifests):
            spec = ManifestSpec.parse(arg)
            labelled = out_dir / f"{k}-{spec.path.stem}.jsonl"
            report[str(spec.path)] = label_replay(Path(d.teacher), d.teacher_input, spec.path, labelled)
            specs.append(ManifestSpec(labelled, spec.weight))
    return specs, report


def label_replay(teacher: Path, teacher_input: str, manifest: Path, out: Path) -> dict[str, Any]:
    """Write ``out``: ``manifest``'s clips with the teacher's transcripts (reused when its key matches)."""
    from fastaed.data.index import file_digest
    from fastaed.data.tokenizer import load_tokenizer
    from fastaed.formats import TOKENIZER_DIR
    from fastaed.train.distill import weights_digest
    from fastaed.train.teacher_labels import choose_clips, pseudo_label

    if not manifest.is_file():
        raise FileNotFoundError(f"distill.replay_manifests: {manifest} does not exist")
    key = {
        "teacher": str(teacher.resolve()), "teacher_weights": weights_digest(teacher),
        "teacher_input": teacher_input, "manifest": str(manifest.resolve()), "digest": file_digest(manifest),
    }  # fmt: skip
    key_path = out.with_suffix(".key.json")
    if out.is_file() and key_path.is_file():
        saved = json.loads(key_path.read_text())
        if saved.get("key") == key:
            return saved["report"]
    tokenizer = load_tokenizer(teacher / TOKENIZER_DIR)
    english_only = not getattr(tokenizer, "multilingual", False)
    left_out = E.BadInputReport()
    chosen = choose_clips([manifest], english_only, sys.maxsize, 0, left_out)
    D.print0(f"replay: labelling {len(chosen)} clips of {manifest} with the teacher ({teacher_input} input)")
    texts, dropped, seconds = pseudo_label(
        teacher, [u for u, _ in chosen], threads=None, whisper_input=WHISPER_INPUT[teacher_input]
    )
    rows = [
        {**raw, "audio_filepath": str(Path(utt.audio_filepath).resolve()), "text": texts[i],
         "target_source": "teacher"}
        for i, (utt, raw) in enumerate(chosen) if i in texts
    ]  # fmt: skip
    if not rows:
        raise ValueError(
            f"distill.replay_manifests: no clip of {manifest} has a usable teacher transcript "
            f"({len(chosen)} read; dropped {dropped}; left out {dict(left_out.counts)})"
        )
    report = {
        "clips": len(rows), "audio_s": round(sum(r["duration"] for r in rows), 1), "read": len(chosen),
        "dropped": dropped, "left_out": left_out.to_dict(), "label_s": round(seconds, 1),
    }  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    write_atomic(key_path, json.dumps({"key": key, "report": report}, indent=1) + "\n")  # last: complete
    return report
