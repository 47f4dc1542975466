"""Hugging Face ``transformers`` side of the Whisper fine-tuning comparison, run by the peer venv's python.

This file is a standalone script: it imports only the standard library, numpy, soundfile, torch and
transformers (never fastaed), so ``.venv-whisper/bin/python`` runs it without fastaed installed there. The
client (``fastaed.bench.peers.hf_finetune``) writes a JSON request, runs

    .venv-whisper/bin/python hf_finetune_runner.py SUBCOMMAND --request REQ.json --response RESP.json

and reads the JSON response; arrays travel as ``.npy`` files named in the JSON.

Subcommands (``model`` is a Hugging Face Whisper folder, e.g. one written by ``fastaed export hf``):

* ``logits`` {model, features: [npy (n_mels, 3000)], tokens: [[ids]], out_dir, threads=1, texts=[],
  audio=[]}: ``WhisperForConditionalGeneration`` in float32 eval mode, teacher-forced: one float32
  ``(U, vocab)`` ``.npy`` per (features, decoder ids) pair. ``texts``: returns the training labels the
  ``train`` recipe makes of each (prompt + text + end-of-text, by the folder's own tokenizer); ``audio``: the
  folder's ``WhisperFeatureExtractor`` output for each wav (``features``, float32 ``(n_mels, 3000)``), so
  tests compare both with fastaed's.
* ``train`` {model, manifest, out_dir, batch_size=8, lr=1e-5, warmup_steps=50, betas=[0.9, 0.98],
  weight_decay=0, grad_clip=1.0, max_steps=null, time_budget_s=null, threads=1, seed=0, save_model=true,
  language="en", dataloader_workers=0}: the recipe users run today (Hugging Face's "fine-tune Whisper" blog
  post): ``WhisperFeatureExtractor`` (every input padded to 30 s) and ``WhisperTokenizer`` with the model's
  prefix, a speech seq2seq collator (labels padded with -100, a leading decoder-start token stripped),
  ``Seq2SeqTrainer`` on CPU in float32 with a constant-with-warmup schedule. Reading audio and computing
  features happen in the dataset, inside the timed loop, as fastaed's front end runs inside its own.
  Training stops at ``max_steps`` or at the first step end past ``time_budget_s`` seconds of training.
  Writes ``out_dir/metrics.jsonl`` (one line per step), ``out_dir/summary.json`` (returned as the response)
  and, with ``save_model``, model + tokenizer + feature extractor to ``out_dir/model``.
* ``versions`` {}: torch, transformers and accelerate versions.

Deviations from the blog recipe, each to train the same thing as fastaed: the transcript is tokenized with a
leading space (Whisper's own outputs start with one, and so do fastaed's labels; the blog's variant teaches
a different first token); features are computed per item rather than in a ``datasets.map`` pass beforehand
(so the front end is timed in both recipes); no gradient checkpointing and no fp16 (CPU, float32; the blog
uses both on a GPU to save memory, which would only slow this baseline down).

A manifest line with a missing field, unreadable audio or an unusable value is an error naming the manifest,
its line and the field; nothing is dropped.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import resource
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # local folders only: never reach the hub
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

SAMPLE_RATE = 16000
CHUNK_SECONDS = 30.0  # Whisper's input window; the feature extractor pads (or cuts) every clip to it
ENGLISH_ONLY_VOCAB = 51864  # Whisper's English-only models; multilingual ones have more
REQUIRED_FIELDS = ("audio_filepath", "duration", "text")


class PeerRequestError(ValueError):
    """A request the runner cannot serve (its message names the field, file or manifest line)."""


def _need(request: dict, field: str):
    if field not in request:
        raise PeerRequestError(f"missing request field {field!r}")
    return request[field]


def _bad_line(manifest: Path, line: int, field: str | None, detail: str) -> PeerRequestError:
    what = f"field '{field}': " if field else ""
    return PeerRequestError(f"{manifest}:{line}: {what}{detail}")


# ----------------------------------------------------------------------------------------------- model


def _threads(request: dict) -> int:
    import torch

    threads = int(request.get("threads", 1))
    torch.set_num_threads(threads)
    return threads


def _load_model(folder: str):
    import torch
    from transformers import WhisperForConditionalGeneration

    if not (Path(folder) / "config.json").is_file():
        raise PeerRequestError(f"{folder}: no config.json (not a Hugging Face model folder)")
    return WhisperForConditionalGeneration.from_pretrained(folder, dtype=torch.float32)


def _multilingual(folder: str) -> bool:
    """The folder's own word (``generation_config.json``'s ``is_multilingual``), else Whisper's vocabulary
    rule."""
    gen = Path(folder) / "generation_config.json"
    if gen.is_file():
        flag = json.loads(gen.read_text(encoding="utf-8")).get("is_multilingual")
        if flag is not None:
            return bool(flag)
    vocab = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))["vocab_size"]
    return int(vocab) > ENGLISH_ONLY_VOCAB


def _tokenizer(folder: str, language: str):
    """The folder's ``WhisperTokenizer`` with the model's own prefix: ``<|startoftranscript|>
    <|notimestamps|>`` (English-only) or ``<|startoftranscript|><|lang|><|transcribe|><|notimestamps|>``
    (multilingual)."""
    from transformers import WhisperTokenizer

    if _multilingual(folder):
        tokenizer = WhisperTokenizer.from_pretrained(folder, language=language, task="transcribe")
    else:
        if language != "en":
            raise PeerRequestError(f"{folder}: an English-only model; language {language!r} is not 'en'")
        tokenizer = WhisperTokenizer.from_pretrained(folder)
    tokenizer.set_prefix_tokens(predict_timestamps=False)
    if tokenizer.pad_token is None:  # Whisper's released tokenizers pad with <|endoftext|>
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _labels(tokenizer, text: str) -> list[int]:
    """Prefix + transcript (with Whisper's leading space) + <|endoftext|>."""
    return list(tokenizer(" " + text.strip()).input_ids)


# ------------------------------------------------------------------------------------------- subcommands


def cmd_logits(request: dict) -> dict:
    import torch

    _threads(request)
    features, tokens = list(_need(request, "features")), list(_need(request, "tokens"))
    if len(features) != len(tokens):
        raise PeerRequestError(f"{len(features)} feature files for {len(tokens)} token lists")
    out_dir = Path(_need(request, "out_dir"))
    out_dir.mkdir(parents=True, exist_ok=True)
    model = _load_model(_need(request, "model")).eval()
    paths = []
    with torch.inference_mode():
        for i, (path, ids) in enumerate(zip(features, tokens)):
            x = np.load(path)
            if x.ndim != 2 or x.shape[0] != model.config.num_mel_bins:
                raise PeerRequestError(f"{path}: features of shape {x.shape}; expected (n_mels, 3000)")
            logits = model(
                input_features=torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None],
                decoder_input_ids=torch.tensor([list(map(int, ids))]),
            ).logits[0]
            out = out_dir / f"logits_{i:05d}.npy"
            np.save(out, logits.float().numpy())
            paths.append(str(out))
    response: dict = {"logits": paths}
    if request.get("audio"):
        from transformers import WhisperFeatureExtractor

        extractor = WhisperFeatureExtractor.from_pretrained(_need(request, "model"))
        response["features"] = []
        for i, audio_path in enumerate(request["audio"]):
            audio, rate = sf.read(audio_path, dtype="float32")
            out = out_dir / f"features_{i:05d}.npy"
            np.save(out, extractor(audio, sampling_rate=rate).input_features[0].astype(np.float32))
            response["features"].append(str(out))
    texts = request.get("texts") or []
    if texts:
        tokenizer = _tokenizer(_need(request, "model"), request.get("language", "en"))
        response["labels"] = [_labels(tokenizer, t) for t in texts]
    return response


def read_training_manifest(manifest: Path, language: str) -> list[dict]:
    """Every line checked before training starts: fields present and typed, audio readable 16 kHz mono of at
    most 30 s, the language one the prefix holds. Returns ``{path, text, line}`` per utterance."""
    if not manifest.is_file():
        raise PeerRequestError(f"{manifest}: manifest not found")
    items = []
    with manifest.open(encoding="utf-8") as f:
        for line_no, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                entry = json.loads(raw)
            except json.JSONDecodeError as e:
                raise _bad_line(manifest, line_no, None, f"not valid JSON ({e.msg})") from None
            if not isinstance(entry, dict):
                raise _bad_line(manifest, line_no, None, "not a JSON object")
            for field in REQUIRED_FIELDS:
                if field not in entry:
                    raise _bad_line(manifest, line_no, field, "missing")
            text, duration = entry["text"], entry["duration"]
            if not isinstance(text, str) or not text.strip():
                raise _bad_line(manifest, line_no, "text", f"{text!r}: expected a non-empty transcript")
            if isinstance(duration, bool) or not isinstance(duration, (int, float)) or duration <= 0:
                raise _bad_line(manifest, line_no, "duration", f"{duration!r}: expected seconds > 0")
            lang = entry.get("source_lang", language)
            if lang != language:
                raise _bad_line(
                    manifest, line_no, "source_lang", f"{lang!r}: this run's prefix holds {language!r}"
                )
            path = Path(str(entry["audio_filepath"]))
            path = path if path.is_absolute() else manifest.parent / path
            try:
                info = sf.info(str(path))
            except Exception as e:  # noqa: BLE001  soundfile raises several types for unreadable files
                raise _bad_line(
                    manifest, line_no, "audio_filepath", f"{path}: unreadable audio ({e})"
                ) from None
            if info.samplerate != SAMPLE_RATE or info.channels != 1:
                raise _bad_line(
                    manifest,
                    line_no,
                    "audio_filepath",
                    f"{path}: {info.samplerate} Hz x {info.channels} channels; expected 16000 Hz mono",
                )
            if info.frames > CHUNK_SECONDS * SAMPLE_RATE:
                raise _bad_line(
                    manifest,
                    line_no,
                    "duration",
                    f"{path}: {info.frames / SAMPLE_RATE:.2f} s; the 30 s window would cut its transcript",
                )
            items.append({"path": str(path), "text": text, "line": line_no})
    if not items:
        raise PeerRequestError(f"{manifest}: no utterances")
    return items


class SpeechDataset:
    """Map-style dataset: reads a clip and computes its 30 s log-mel and labels when an item is asked for."""

    def __init__(self, items: list[dict], manifest: Path, feature_extractor, tokenizer):
        self.items, self.manifest = items, manifest
        self.feature_extractor, self.tokenizer = feature_extractor, tokenizer

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        item = self.items[index]
        try:
            audio, rate = sf.read(item["path"], dtype="float32")
        except Exception as e:  # noqa: BLE001
            raise _bad_line(
                self.manifest, item["line"], "audio_filepath", f"unreadable audio ({e})"
            ) from None
        features = self.feature_extractor(audio, sampling_rate=rate).input_features[0]  # (n_mels, 3000)
        return {
            "input_features": features,
            "labels": _labels(self.tokenizer, item["text"]),
            "audio_s": len(audio) / rate,
        }


STATS_KEY = "fastaed_batch_stats"  # the collator's per-batch record; the trainer takes it out before forward
STATS_FIELDS = ("audio_s", "utterances", "label_positions", "label_padding")


class SpeechSeq2SeqCollator:
    """The blog recipe's ``DataCollatorSpeechSeq2SeqWithPadding``, plus each batch's audio seconds and label
    padding under ``STATS_KEY``. The collator runs in the DataLoader's worker processes when there are any,
    so the record travels inside the batch; the trainer (``_logged_trainer``) moves it to ``batches`` in the
    training process, where :class:`StepLog` reads it in step order."""

    def __init__(self, feature_extractor, tokenizer, decoder_start_token_id: int):
        self.feature_extractor, self.tokenizer = feature_extractor, tokenizer
        self.decoder_start_token_id = decoder_start_token_id
        self.batches: collections.deque = collections.deque()

    def __call__(self, features: list[dict]) -> dict:
        import torch

        inputs = [{"input_features": f["input_features"]} for f in features]
        batch = self.feature_extractor.pad(inputs, return_tensors="pt")
        labels_batch = self.tokenizer.pad([{"input_ids": f["labels"]} for f in features], return_tensors="pt")
        labels = labels_batch["input_ids"].masked_fill(labels_batch.attention_mask.ne(1), -100)
        # The model prepends the decoder start token itself (shifting the labels right).
        if (labels[:, 0] == self.decoder_start_token_id).all().item():
            labels = labels[:, 1:]
        batch["labels"] = labels
        stats = (sum(f["audio_s"] for f in features), len(features), labels.numel(), (labels == -100).sum())
        batch[STATS_KEY] = torch.tensor([float(x) for x in stats], dtype=torch.float64)
        return batch

    def take_stats(self, inputs: dict) -> None:
        """Move a batch's record out of the model inputs into ``batches`` (in the training process)."""
        values = inputs.pop(STATS_KEY).tolist()
        self.batches.append({k: (v if k == "audio_s" else int(v)) for k, v in zip(STATS_FIELDS, values)})


def _logged_trainer(collator: SpeechSeq2SeqCollator):
    """``Seq2SeqTrainer`` that takes the collator's batch record out of each batch before the forward."""
    from transformers import Seq2SeqTrainer

    class LoggedTrainer(Seq2SeqTrainer):
        def training_step(self, model, inputs, *args, **kwargs):
            collator.take_stats(inputs)
            return super().training_step(model, inputs, *args, **kwargs)

    return LoggedTrainer


def _step_log_callback(collator: SpeechSeq2SeqCollator, metrics_path: Path, time_budget_s: float | None):
    from transformers import TrainerCallback

    class StepLog(TrainerCallback):
        """Per step: loss, learning rate, cumulative training seconds, batch audio; stops past the budget."""

        def __init__(self):
            self.start = 0.0
            self.pending: dict | None = None
            self.steps: list[dict] = []
            self.file = metrics_path.open("w", encoding="utf-8")

        def on_train_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            elapsed = time.perf_counter() - self.start
            self.pending = {"step": state.global_step, "elapsed_s": elapsed, **collator.batches.popleft()}
            if time_budget_s is not None and elapsed >= time_budget_s:
                control.should_training_stop = True
            return control

        def on_log(self, args, state, control, logs=None, **kwargs):
            if self.pending is None or not logs or "loss" not in logs:
                return
            record = {
                "step": self.pending["step"],
                "loss": float(logs["loss"]),
                "lr": float(logs["learning_rate"]),
                "elapsed_s": self.pending["elapsed_s"],
                "batch_audio_s": self.pending["audio_s"],
                "batch_size": self.pending["utterances"],
                "label_positions": self.pending["label_positions"],
                "label_padding": self.pending["label_padding"],
            }
            self.steps.append(record)
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()
            self.pending = None

    return StepLog()


def cmd_train(request: dict) -> dict:
    folder = str(_need(request, "model"))
    manifest = Path(_need(request, "manifest"))
    out_dir = Path(_need(request, "out_dir"))
    max_steps = request.get("max_steps")
    time_budget_s = request.get("time_budget_s")
    if max_steps is None and time_budget_s is None:
        raise PeerRequestError("give max_steps or time_budget_s (or both)")
    language = str(request.get("language", "en"))
    batch_size = int(request.get("batch_size", 8))
    beta1, beta2 = map(float, request.get("betas", [0.9, 0.98]))
    items = read_training_manifest(manifest, language)  # before the slow imports: bad input fails fast

    import accelerate
    import torch
    import transformers
    from transformers import Seq2SeqTrainingArguments, WhisperFeatureExtractor

    threads = _threads(request)
    tokenizer = _tokenizer(folder, language)
    feature_extractor = WhisperFeatureExtractor.from_pretrained(folder)
    model = _load_model(folder)
    collator = SpeechSeq2SeqCollator(feature_extractor, tokenizer, model.config.decoder_start_token_id)
    out_dir.mkdir(parents=True, exist_ok=True)
    step_log = _step_log_callback(collator, out_dir / "metrics.jsonl", time_budget_s)

    args = Seq2SeqTrainingArguments(
        output_dir=str(out_dir / "trainer"),
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=1,
        learning_rate=float(request.get("lr", 1e-5)),
        lr_scheduler_type="constant_with_warmup",
        warmup_steps=int(request.get("warmup_steps", 50)),
        adam_beta1=beta1,
        adam_beta2=beta2,
        weight_decay=float(request.get("weight_decay", 0.0)),
        max_grad_norm=float(request.get("grad_clip", 1.0)),
        max_steps=int(max_steps) if max_steps is not None else 10**9,  # the time budget stops it
        use_cpu=True,
        fp16=False,
        bf16=False,
        eval_strategy="no",
        save_strategy="no",
        logging_strategy="steps",
        logging_steps=1,
        report_to="none",
        dataloader_num_workers=int(request.get("dataloader_workers", 0)),
        dataloader_pin_memory=False,
        remove_unused_columns=False,
        disable_tqdm=True,
        log_level="warning",
        seed=int(request.get("seed", 0)),
    )
    trainer = _logged_trainer(collator)(
        model=model,
        args=args,
        train_dataset=SpeechDataset(items, manifest, feature_extractor, tokenizer),
        data_collator=collator,
        processing_class=feature_extractor,
        callbacks=[step_log],
    )
    trainer.train()
    step_log.file.close()
    steps = step_log.steps
    if not steps:
        raise PeerRequestError("training ran no step")

    train_time = steps[-1]["elapsed_s"]
    audio_s = sum(s["batch_audio_s"] for s in steps)
    utterances = sum(s["batch_size"] for s in steps)
    label_positions = sum(s["label_positions"] for s in steps)
    summary = {
        "recipe": "transformers Seq2SeqTrainer + WhisperFeatureExtractor (30 s padded)",
        "steps": len(steps),
        "train_time_s": train_time,
        "audio_s": audio_s,
        "audio_s_per_s": audio_s / train_time if train_time > 0 else None,
        "utterances_seen": utterances,
        "mean_batch_size": utterances / len(steps),
        "input_padding": 1.0 - audio_s / (utterances * CHUNK_SECONDS),
        "output_padding": sum(s["label_padding"] for s in steps) / label_positions,
        # This process alone (Linux reports KiB): its DataLoader workers are not in it. `fastaed bench
        # finetune` reports the peak of the whole process tree (fastaed.bench.finetune.TreePeak) instead.
        "peak_mem_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "dataloader_workers": int(request.get("dataloader_workers", 0)),
        "first_loss": steps[0]["loss"],
        "final_loss": steps[-1]["loss"],
        "threads": threads,
        "batch_size": batch_size,
        "optimizer": str(args.optim.value if hasattr(args.optim, "value") else args.optim),
        "manifest": str(manifest),
        "utterances_in_manifest": len(items),
        "versions": _versions(torch, transformers, accelerate),
        "metrics": str(out_dir / "metrics.jsonl"),
        "model_dir": None,
    }
    if request.get("save_model", True):
        model_dir = out_dir / "model"
        trainer.model.save_pretrained(model_dir)
        tokenizer.save_pretrained(model_dir)
        feature_extractor.save_pretrained(model_dir)
        # Training leaves the tokenizer as it was, but save_pretrained rewrites tokenizer.json (it bakes the
        # prefix into a post-processor): the original file keeps the tokenizer byte-identical, so the
        # trained folder imports back into fastaed with the starting checkpoint's tokenizer identity.
        shutil.copyfile(Path(folder) / "tokenizer.json", model_dir / "tokenizer.json")
        summary["model_dir"] = str(model_dir)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def _versions(torch, transformers, accelerate) -> dict:
    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "accelerate": accelerate.__version__,
    }


def cmd_versions(request: dict) -> dict:
    import accelerate
    import torch
    import transformers

    return _versions(torch, transformers, accelerate)


COMMANDS = {"logits": cmd_logits, "train": cmd_train, "versions": cmd_versions}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=sorted(COMMANDS))
    parser.add_argument("--request", type=Path, required=True, help="JSON request")
    parser.add_argument("--response", type=Path, required=True, help="JSON response (written on success)")
    args = parser.parse_args(argv)
    request = json.loads(args.request.read_text(encoding="utf-8"))
    try:
        response = COMMANDS[args.command](request)
    except PeerRequestError as e:
        print(f"hf_finetune_runner {args.command}: {e}", file=sys.stderr)
        return 2
    tmp = args.response.with_suffix(".tmp")
    tmp.write_text(json.dumps(response), encoding="utf-8")
    tmp.replace(args.response)
    return 0


if __name__ == "__main__":
    sys.exit(main())
