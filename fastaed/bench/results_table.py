"""``fastaed bench readme``: README.md's results table, rendered from the JSON records in ``bench_results/``.

Every number in the table is read from a named path of a recorded file, so the README cannot say more than
the records do. The table lives between two marker comments in README.md; this module owns what is between
them. ``--check`` renders the table and exits 1 when it differs from the README's (drift: a record changed
and the README was not re-rendered, or the README was edited by hand); a test in the default suite does the
same check.

A cell is text with placeholders ``{FILE:PATH|FORMAT}``:

* ``FILE`` is relative to the results folder; ``a.json,all/a.json`` reads the same path from several files;
* ``PATH`` is dotted keys; ``*`` takes every value of a mapping or list, ``[k=v,k2=v2]`` every list item whose
  fields match, a number the item at that index;
* two or more values render as a range (``1,132–1,689x``); ``{A / B|FORMAT}`` is the ratio of two values;
* ``FORMAT`` is one of :data:`FORMATS`.

A :class:`Pending` cell renders its text when its record does not exist yet (a measurement being redone).
Text outside placeholders is fixed wording, targets (from the spec) or numbers quoted from a paper, which the
row says it is.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastaed.util.files import FileFormatError, parse_json

BEGIN = "<!-- results:begin (rendered by `fastaed bench readme` from bench_results/; do not edit by hand) -->"
END = "<!-- results:end -->"
HEADER = ("what", "fastaed", "reference", "target")


def _sig3(x: float) -> str:
    """Three significant digits, never in exponent form (``4.66``, ``27.2``, ``780``)."""
    if x == 0:
        return "0"
    text = f"{x:#.3g}"  # '#': keep trailing zeros (67.0)
    return f"{float(text):,.0f}" if "e" in text else text.rstrip(".")


# name -> (function of the raw value, unit appended once, after a range's upper end too)
FORMATS: dict[str, tuple[Callable[[float], str], str]] = {
    "pct": (lambda v: _sig3(100 * v), "%"),
    "pct1": (lambda v: f"{100 * v:,.1f}", "%"),
    "pct0": (lambda v: f"{100 * v:,.0f}", "%"),
    "rel": (lambda v: f"{100 * (v - 1):+.1f}", "%"),  # a ratio as a relative change: 0.936 -> -6.4%
    "x0": (lambda v: f"{v:,.0f}", "x"),
    "x1": (lambda v: f"{v:,.1f}", "x"),
    "x2": (lambda v: f"{v:,.2f}", "x"),
    "int": (lambda v: f"{v:,.0f}", ""),
    "f1": (lambda v: f"{v:,.1f}", ""),
    "f2": (lambda v: f"{v:,.2f}", ""),
    "s0": (lambda v: f"{v:,.0f}", " s"),
    "s1": (lambda v: f"{v:,.1f}", " s"),
    "s2": (lambda v: f"{v:,.2f}", " s"),
    "h1": (lambda v: f"{v / 3600:,.1f}", " h"),
    "mb": (lambda v: f"{v:,.0f}", " MB"),
    "M1": (lambda v: f"{v / 1e6:,.1f}", "M"),
    "pts": (lambda v: f"{v:+.1f}", " points"),  # a difference already in percentage points
}


@dataclass(frozen=True)
class Pending:
    """A cell whose record is being re-measured: its text until ``needs`` exists, then the template."""

    template: str
    needs: str  # the file (relative to the results folder) whose absence means "pending"
    text: str


Cell = str | Pending


@dataclass(frozen=True)
class Row:
    what: str
    fastaed: Cell
    reference: Cell = ""
    target: str = ""
    needs: str | None = None  # a record without which the row is left out (a benchmark not yet run)


def _ft(recipe: str, key: str, fmt: str) -> str:
    """A placeholder for one recipe's value in the fine-tuning record."""
    return f"{{finetune.json:runs[recipe={recipe}].{key}|{fmt}}}"


def _ft_real(model: str, shape: str, name: str, fmt: str) -> str:
    """A placeholder for a real-speech WER of the fine-tuning record (``name``: the set's file stem)."""
    selector = f"model={model},input={shape},manifest=data/real/{name}.jsonl"
    return f"{{finetune.json:real_speech[{selector}].wer|{fmt}}}"


def _adapt_row(model: str) -> Row:
    """The row of ``fastaed bench adapt``'s record for ``model`` (``make adapt``), shown once it exists."""
    name = f"adapt_{model.replace('.', '_')}.json"

    def at(path: str, fmt: str) -> str:
        return "{" + f"{name}:{path}|{fmt}" + "}"

    return Row(
        f"Whisper {model} adapted to unpadded input (`make adapt`: self-distillation from the padded "
        f"original, {at('adaptation.wall_s', 's0')}, {at('adaptation.steps', 'int')} steps), held-out real "
        "speech: WER change per set / RTFx over faster-whisper float32, batch 1 / 16 / loops",
        f"**{at('summary.wer_delta_points.*', 'pts')} / {at('summary.rtfx_vs_faster_whisper.batch_1', 'x1')}"
        f" / {at('summary.rtfx_vs_faster_whisper.batch_16', 'x1')} / {at('summary.adapted_loops', 'int')}**",
        f"padded original: WER {at('summary.wer.a.*', 'pct1')}, faster-whisper RTFx "
        f"{at('summary.rtfx.d.batch_1', 'f1')} / {at('summary.rtfx.d.batch_16', 'f1')}; original unpadded: "
        f"WER {at('summary.wer.b.*', 'pct0')}, {at('summary.loops.b.total', 'int')} loops",
        "≤ +0.5 points / ≥ 3x / ≥ 3x / 0 (see BENCHMARKS.md)",
        needs=name,
    )


def _adapt_all_clips_row() -> Row:
    """Whisper base's adaptation re-judged on every held-out clip (batch 16, no peer)."""
    name = "adapt_base_all_clips.json"
    return Row(
        f"… Whisper base adapted, on every held-out clip ({{{name}:sets.*.clips|int}} per set), batch 16: "
        "WER change per set / loops",
        f"**{{{name}:summary.wer_delta_points.*|pts}} / {{{name}:summary.adapted_loops|int}}**",
        f"padded original: WER {{{name}:summary.wer.a.*|pct1}}; original unpadded: "
        f"{{{name}:summary.loops.b.total|int}} loops",
        "≤ +0.5 points / 0",
        needs=name,
    )


def _whisper_speed_row(model: str) -> Row:
    """fastaed against faster-whisper on real clips, fp32 and int8 (``fastaed bench whisper``)."""
    name = f"whisper_{model.replace('.', '_')}.json"

    def ours(precision: str, bs: int, key: str, fmt: str = "x2") -> str:
        return "{" + f"{name}:runs[engine=fastaed,precision={precision},batch_size={bs}].{key}|{fmt}" + "}"

    def peer(precision: str, bs: int) -> str:
        return "{" + f"{name}:runs[engine=faster-whisper,precision={precision},batch_size={bs}].rtfx|f1" + "}"

    wer = "{" + f"{name}:int8_vs_fp32[batch_size=1].wer_points|pts" + "}"
    return Row(
        f"Whisper {model}, 30 s padded, {{{name}:clips.count|int}} real clips, 2 CPU threads (median of 3 "
        "passes, engines alternating): fastaed fp32 over faster-whisper float32, batch 1 / 16; fastaed int8 "
        "over faster-whisper int8, batch 1 / 16; int8 WER change",
        f"**{ours('fp32', 1, 'vs_fw_same_precision')} / {ours('fp32', 16, 'vs_fw_same_precision')}; "
        f"{ours('int8', 1, 'vs_fw_same_precision')} / {ours('int8', 16, 'vs_fw_same_precision')}; {wer}** "
        f"(full precision: transcripts identical to faster-whisper's on "
        f"{{{name}:identical_transcripts.*.identical|int}} of {{{name}:clips.count|int}})",
        f"faster-whisper RTFx float32 {peer('float32', 1)} / {peer('float32', 16)}, int8 {peer('int8', 1)} / "
        f"{peer('int8', 16)}",
        "≥ 1.2x / ≥ 2x; ≥ 1x / ≥ 1x; ≤ +0.3 points (see BENCHMARKS.md)",
        needs=name,
    )


def _int8_heldout_row(model: str) -> Row:
    """int8 against fp32 on every held-out English clip (``bench whisper --heldout``), with the peer's."""
    name = f"whisper_heldout_{model.replace('.', '_')}.json"

    def wer(engine: str, precision: str) -> str:
        return "{" + f"{name}:runs[engine={engine},precision={precision},batch_size=16].wer.all|pct1" + "}"

    return Row(
        f"Whisper {model} quantized vs full precision on the held-out real speech "
        f"({{{name}:clips.count|int}} clips: pocketsphinx and the held-out Asterisk half), batch 16: "
        "WER change",
        f"**{{{name}:int8_vs_fp32[batch_size=16].wer_points|pts}}** (WER {wer('fastaed', 'fp32')} -> "
        f"{wer('fastaed', 'int8')})",
        f"faster-whisper float32 {wer('faster-whisper', 'float32')} -> int8 {wer('faster-whisper', 'int8')}",
        "≤ +0.3 points",
        needs=name,
    )


def _nemo_row() -> Row:
    def at(bs: int, key: str, fmt: str = "x2") -> str:
        return "{" + f"nemo.json:models[model=canary-180m-flash].runs[batch_size={bs}].{key}|{fmt}" + "}"

    return Row(
        "canary-180m-flash (published architecture, NeMo-built random weights), real clips, 2 CPU threads: "
        "RTFx over NeMo `transcribe()` fp32, batch 1 / 16; fastaed int8 over NeMo fp32",
        f"**{at(1, 'speedup')} / {at(16, 'speedup')}**; quantized: {at(1, 'int8_speedup')} / "
        f"{at(16, 'int8_speedup')}",
        f"NeMo RTFx {at(1, 'nemo_rtfx', 'f1')} / {at(16, 'nemo_rtfx', 'f1')}",
        "≥ 2x / ≥ 3x (fp32; see BENCHMARKS.md)",
        needs="nemo.json",
    )


def _distilled_finetune_row() -> Row:
    name, round1 = "finetune_distilled_adapted_r2.json", "finetune_distilled_adapted.json"
    replay, first = "finetune_distilled_replay.json", "finetune_distilled.json"
    points = "real_speech_verdict.*.by_recipe.distilled.points|pts"
    return Row(
        "Whisper tiny.en fine-tuned on synthetic speech with the distillation term and the Asterisk "
        "adaptation half replayed, started from the adapted checkpoint (second round; `bench finetune "
        f"--recipes distilled --distilled-init`, {{{name}:runs.0.steps|int}} steps, "
        f"{{{name}:runs.0.train_time_s|s0}} of training), unpadded: real-speech WER change vs the padded "
        "original, pocketsphinx / held-out Asterisk",
        f"**{{{name}:{points}}}**",
        f"from the first-round adapted checkpoint: {{{round1}:{points}}}; from the original: "
        f"{{{replay}:{points}}}; no replay (first round, other Asterisk clips): {{{first}:{points}}}; "
        "plain fine-tune (bucketed, 480 s): {finetune.json:real_speech_verdict.*.points|pts}",
        "≤ +1 point",
        needs=name,
    )


# The README's results table. Paths name the record each number comes from; see the module docstring.
ROWS: tuple[Row, ...] = (
    Row(
        "padding in / out, {sampler.json:utterances|int} log-normal utts, "
        "{sampler.json:max_duration|int} s budget",
        "**{sampler.json:distributions.lognormal.strategies.ours_2d.input_padding|pct} / "
        "{sampler.json:distributions.lognormal.strategies.ours_2d.output_padding|pct}** (2D 30 × 4)",
        "Lhotse 1D: {sampler.json:distributions.lognormal.strategies.lhotse_1d.input_padding|pct} / "
        "{sampler.json:distributions.lognormal.strategies.lhotse_1d.output_padding|pct}; random (Lhotse "
        "SimpleCutSampler): {sampler.json:distributions.lognormal.strategies.lhotse_simple.input_padding|pct}"
        " / {sampler.json:distributions.lognormal.strategies.lhotse_simple.output_padding|pct}",
        "≤ 5% / ≤ 8%",
    ),
    Row(
        "sampler batches/s per epoch, warm",
        "{sampler.json:distributions.lognormal.speed.ours.epoch_batches_per_s|int} "
        "(**{sampler.json:distributions.*.speed.speedup_epoch|x0}** Lhotse's, warm: our index already in "
        "memory, against Lhotse re-reading its lazy JSONL manifest every epoch)",
        "Lhotse {sampler.json:lhotse_version}: "
        "{sampler.json:distributions.lognormal.speed.lhotse.epoch_batches_per_s|int}",
        "≥ 10x",
    ),
    Row(
        "first epoch from a cold manifest: index build (parse, validate, tokenize) + bins + plan + epoch",
        "**{sampler.json:distributions.*.speed.speedup_cold|x1}** Lhotse's speed",
        "Lhotse {sampler.json:lhotse_version}: construct + epoch",
        "(≥ 10x is per warm epoch)",
    ),
    Row(
        "plan / restore an epoch of 1M utterances",
        "{sampler.json:one_million.plan_s|s2} / {sampler.json:one_million.restore_s|s2} "
        "(+{sampler.json:one_million.construct_s|s2} build): restore rebuilds the epoch plan from the seed "
        "(O(N), vectorised), no batch is replayed",
        "Lhotse {sampler.json:lhotse_version} replays the epoch "
        "({sampler.json:distributions.lognormal.lhotse_restore.restore_s|s1} at 20k); Lhotse main since June "
        "2026 (PR #1570, after 1.33) restores in O(1) from indexed JSONL / Shar",
        "≤ 5 s / ≤ 1 s",
    ),
    Row(
        "metadata index, {index.json:lines|int} manifest lines: build / reload",
        "{index.json:build_s|s1} / {index.json:reload_s|s2}",
        "",
        "≤ 30 s / ≤ 1 s",
    ),
    Row(
        "log-mel features, per CPU core, batch 1 / 16",
        "{features.json:rows[stage=features].xrt_per_core|x0} real time",
        "",
        "≥ 500x",
    ),
    Row(
        "batch-size profile, memory fill per bucket, min / mean (CPU, tiny-flash; measured peaks): `make "
        "demo`'s stage on the demo data, `--memory-budget 4` (GiB)",
        "**{demo_profile_stage.json:after.min_fill|pct} / {demo_profile_stage.json:after.mean_fill|pct}** "
        "({demo_profile_stage.json:after.buckets|int} buckets); the stage took "
        "{demo_profile_stage.json:after.wall_s|s0} and {demo_profile_stage.json:after.max_rss_mb|mb} peak "
        "RSS on a loaded machine",
        "",
        "≥ 85%; stage ≤ {demo_profile_stage.json:requirement.wall_s_max|s0}, ≤ "
        "{demo_profile_stage.json:requirement.max_rss_mb_max|mb}",
    ),
    Row(
        "… SPEC log-normal lengths (0.5–40 s, 100k utts), re-run with measured peaks",
        "fill min / mean **{batch_sizes_synthetic.json:profile_min_fill|pct} / "
        "{batch_sizes_synthetic.json:profile_mean_fill|pct}**; mean batch "
        "**{batch_sizes_synthetic.json:mean_batch_ratio|x2}** the heuristic's; training audio s/s "
        "**{batch_sizes_synthetic.json:throughput_ratio|x2}** the heuristic's "
        "({batch_sizes_synthetic.json:steps|int} timed steps each)",
        "NeMo heuristic fill min {batch_sizes_synthetic.json:heuristic_min_fill|pct}; paper (GPU, quoted): "
        "~5x mean batch, ~1.8x throughput",
        "≥ 85% fill; ≥ 4x batch, ≥ 1.8x speed (GPU: a CPU gains nothing from fuller batches)",
    ),
    Row(
        "`make demo` training: tiny-flash ({convergence.json:runs.tiny-flash.summary.params|M1}) on 2 CPU "
        "cores, 42 min budget",
        "dev **WER {convergence.json:rows[step=3377].a_wer|pct1} / CER "
        "{convergence.json:rows[step=3377].a_cer|pct1}** at step 3,377, the end of the demo run that the "
        "long run below continued",
        "pilots quoted by the training issue (vanilla AED, 30 min): WER 113% / CER 71%",
        "well below the pilots",
    ),
    Row(
        "long run (`make convergence`): tiny-flash vs tiny-balanced, same batches",
        "step {convergence.json:held_out.step|int} of {convergence.json:runs.tiny-flash.summary.steps|int} "
        "({convergence.json:runs.tiny-flash.summary.wall_time_s|h1}): in-domain test **WER "
        "{convergence.json:held_out.rows[model=tiny-flash,set=in-domain].wer|pct1}** / unseen voice "
        "{convergence.json:held_out.rows[model=tiny-flash,set=unseen-voice].wer|pct1}",
        "tiny-balanced, step {convergence.json:held_out.step|int} of "
        "{convergence.json:runs.tiny-balanced.summary.steps|int}: "
        "{convergence.json:held_out.rows[model=tiny-balanced,set=in-domain].wer|pct1} / "
        "{convergence.json:held_out.rows[model=tiny-balanced,set=unseen-voice].wer|pct1}",
        "flash within 10% of balanced (**{convergence.json:held_out.rows[model=tiny-flash,set=in-domain].wer"
        " / convergence.json:held_out.rows[model=tiny-balanced,set=in-domain].wer|rel}**); ≤ 15% in-domain",
    ),
    Row(
        "RTFx, tiny-flash vs tiny-balanced (equal params, random weights), CPU batch 1 / 16",
        "**{rtfx.json,all/rtfx.json:flash_vs_balanced.batch_1|x1} / "
        "{rtfx.json,all/rtfx.json:flash_vs_balanced.batch_16|x1}** (two runs)",
        "paper (GPU, 32+4 vs 24+24, quoted): ~3x",
        "≥ 3x (not met on CPU: see BENCHMARKS.md)",
    ),
    Row(
        "decoder tokens/s, our K/V cache vs a NeMo-style hidden-state cache (same block, NeMo's caching), "
        "batch 1 / 64",
        "**{rtfx.json,all/rtfx.json:kv_cache_vs_nemo_style.batch_1|x1} / "
        "{rtfx.json,all/rtfx.json:kv_cache_vs_nemo_style.batch_64|x1}** (two runs)",
        "",
        "≥ 2x",
    ),
    Row(
        "Whisper tiny.en fine-tuning, {finetune.json:config.time_budget_s|int} s per recipe on 2 CPU cores "
        "(`make finetune`, every recipe with the YAML's data-loading workers): training audio s/s",
        f"**{_ft('bucketed', 'audio_s_per_s', 'f1')} = {{finetune.json:comparisons.padded.audio_s_per_s|x1}}"
        " / {finetune.json:comparisons.hf.audio_s_per_s|x1}"
        f"** the 30 s padded recipe's ({_ft('padded', 'audio_s_per_s', 'f2')}) / HF `Seq2SeqTrainer`'s "
        f"({_ft('hf', 'audio_s_per_s', 'f2')}); "
        f"{_ft('bucketed', 'steps', 'int')} / {_ft('padded', 'steps', 'int')} / {_ft('hf', 'steps', 'int')} "
        f"steps; dev WER {_ft('bucketed', 'dev_wer', 'pct1')} vs {_ft('padded', 'dev_wer', 'pct1')} / "
        f"{_ft('hf', 'dev_wer', 'pct1')}",
        "(a) fastaed padded, fixed batch {finetune.json:config.padded_batch_size|int}; (b) transformers "
        "{finetune.json:runs[recipe=hf].versions.transformers}",
        "≥ 4x / ≥ 5x at equal or better dev WER",
    ),
    Row(
        "… real-speech WER of the fine-tuned model fed unpadded input (pocketsphinx / Asterisk sets, never "
        "trained on)",
        f"{_ft_real('fine-tuned (bucketed)', 'unpadded', 'real_check', 'pct1')} / "
        f"{_ft_real('fine-tuned (bucketed)', 'unpadded', 'asterisk', 'pct1')} (original unpadded: "
        f"{_ft_real('original', 'unpadded', 'real_check', 'pct0')} / "
        f"{_ft_real('original', 'unpadded', 'asterisk', 'pct0')}, loops)",
        f"original padded: {_ft_real('original', 'padded', 'real_check', 'pct1')} / "
        f"{_ft_real('original', 'padded', 'asterisk', 'pct1')}",
        "within 1 point: **missed** (see BENCHMARKS.md)",
    ),
    Row(
        "long-form sequential (openai-whisper's algorithm, greedy), tiny.en on 2 / 10 / 60-min real "
        "recordings: same text as openai-whisper `transcribe()`; RTFx",
        "**same text on {longform.json:targets[target=same text as openai-whisper (share of files)].value|"
        "pct0} of the files**; RTFx {longform.json:rows[model=tiny.en,engine=fastaed-sequential].rtfx|f1} "
        "(word timestamps on, as for both peers)",
        "faster-whisper: {longform.json:rows[model=tiny.en,engine=faster-whisper-sequential].rtfx|f1}; "
        "openai-whisper: {longform.json:rows[model=tiny.en,engine=openai-sequential].rtfx|f1}",
        "same text on ≥ 95%; ≥ 1x faster-whisper: **missed** "
        "({longform.json:targets[threshold=1.0].value|x2} over the three files)",
    ),
    Row(
        "long-form batched (VAD chunks, duration-sorted batches of 16), tiny.en on the 60-min recording: "
        "WER / RTFx / median segment-boundary error",
        "**{longform.json:rows[model=tiny.en,minutes=60.0,engine=fastaed-batched-16].scores.wer|pct1} / "
        "{longform.json:rows[model=tiny.en,minutes=60.0,engine=fastaed-batched-16].rtfx|f1} / "
        "{longform.json:rows[model=tiny.en,minutes=60.0,engine=fastaed-batched-16].scores.boundary_median_ms"
        "|int} ms**",
        "faster-whisper `BatchedInferencePipeline` (batch 8): "
        "{longform.json:rows[model=tiny.en,minutes=60.0,engine=faster-whisper-batched-8].scores.wer|pct1} / "
        "{longform.json:rows[model=tiny.en,minutes=60.0,engine=faster-whisper-batched-8].rtfx|f1} / "
        "{longform.json:rows[model=tiny.en,minutes=60.0,engine=faster-whisper-batched-8].scores."
        "boundary_median_ms|int} ms",
        "≥ 1.5x its RTFx at ≤ its WER (**missed**: "
        "{longform.json:rows[model=tiny.en,minutes=60.0,engine=fastaed-batched-16].rtfx / "
        "longform.json:rows[model=tiny.en,minutes=60.0,engine=faster-whisper-batched-8].rtfx|x2}); "
        "≤ 150 ms",
    ),
    Row(
        "`fastaed serve` (tiny.en, padded), 32 concurrent clients sending real short clips: audio s answered "
        "per s",
        "**{serve.json:rows[target=fastaed-batching].levels[clients=32].throughput|f2}** (batches of "
        "{serve.json:rows[target=fastaed-batching].levels[clients=32].batches.mean_rows|f1} rows on "
        "average)",
        "`--max-batch 1` (one at a time): {serve.json:rows[target=fastaed-max-batch-1].levels[clients=32]."
        "throughput|f2}; faster-whisper behind a one-model server: "
        "{serve.json:rows[target=faster-whisper].levels[clients=32].throughput|f2}",
        "≥ 3x one at a time, ≥ 2x faster-whisper's server: **missed** "
        "({serve.json:rows[target=fastaed-batching].levels[clients=32].throughput / "
        "serve.json:rows[target=fastaed-max-batch-1].levels[clients=32].throughput|x2}, "
        "{serve.json:rows[target=fastaed-batching].levels[clients=32].throughput / "
        "serve.json:rows[target=faster-whisper].levels[clients=32].throughput|x2})",
    ),
    Row(
        "… a short clip sent while a 10-min file is being transcribed: its wait beyond its own compute, max",
        "**{serve.json:rows[target=fastaed-batching].mixed.extra.max|s1}**",
        "one at a time: {serve.json:rows[target=fastaed-max-batch-1].mixed.extra.max|s1}; faster-whisper's "
        "server: {serve.json:rows[target=faster-whisper].mixed.extra.max|s1}",
        "≤ 1.5 s",
    ),
    _adapt_row("tiny.en"),
    _adapt_row("base"),
    _adapt_all_clips_row(),
    _distilled_finetune_row(),
    _whisper_speed_row("tiny.en"),
    _whisper_speed_row("base"),
    _int8_heldout_row("tiny.en"),
    _int8_heldout_row("base"),
    _nemo_row(),
)


class RecordError(FileFormatError):
    """A placeholder names a file, path or format that the records do not have, or the README has no table
    (``fastaed`` prints the message and exits 2)."""


_PLACEHOLDER = re.compile(r"\{([^{}]+)\}")
_SELECTOR = re.compile(r"^(?P<key>[^\[\]]*)\[(?P<sel>[^\]]+)\]$")


def _split_path(path: str) -> list[str]:
    """Dotted keys; a ``[...]`` selector may hold dots and spaces (``rows[manifest=data/a.jsonl]``)."""
    parts, depth, current = [], 0, ""
    for ch in path:
        depth += ch == "["
        depth -= ch == "]"
        if ch == "." and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    return [*parts, current]


def _step(values: list[Any], part: str, where: str) -> list[Any]:
    out: list[Any] = []
    m = _SELECTOR.match(part)
    key, selector = (m["key"], m["sel"]) if m else (part, None)
    for value in values:
        if key == "*":
            out += list(value.values()) if isinstance(value, dict) else list(value)
        elif key:
            if isinstance(value, list) and key.isdigit() and int(key) < len(value):
                out.append(value[int(key)])
            elif isinstance(value, dict) and key in value:
                out.append(value[key])
            else:
                raise RecordError(f"{where}: no key {key!r}")
        else:
            out.append(value)
    if selector is None:
        return out
    wanted = dict(pair.split("=", 1) for pair in selector.split(","))
    chosen = [
        item
        for items in out
        for item in (items if isinstance(items, list) else [items])
        if isinstance(item, dict) and all(str(item.get(k)) == v for k, v in wanted.items())
    ]
    if not chosen:
        raise RecordError(f"{where}: no item matches [{selector}]")
    return chosen


class Records:
    """The JSON files of a results folder, read once each; remembers which were used."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.cache: dict[str, Any] = {}

    def exists(self, name: str) -> bool:
        return (self.folder / name).is_file()

    def load(self, name: str) -> Any:
        if name not in self.cache:
            path = self.folder / name
            try:
                text = path.read_text()
            except FileNotFoundError:
                raise RecordError(f"{path}: no such record") from None
            self.cache[name] = parse_json(text, str(path))
        return self.cache[name]

    def values(self, ref: str) -> list[Any]:
        """Every value ``FILE[,FILE...]:PATH`` names (one per file, unless the path has ``*`` or ``[..]``)."""
        files, sep, path = ref.strip().partition(":")
        if not sep or not path:
            raise RecordError(f"{ref!r}: want FILE:PATH")
        found = []
        for name in files.split(","):
            values = [self.load(name)]
            for part in _split_path(path):
                values = _step(values, part, f"{self.folder / name}: {path}")
            found += values
        return found


def _format(values: list[Any], fmt: str | None, where: str) -> str:
    if fmt is None:
        if len(values) != 1:
            raise RecordError(f"{where}: {len(values)} values need a FORMAT")
        return str(values[0])
    if fmt not in FORMATS:
        raise RecordError(f"{where}: unknown format {fmt!r} (one of {', '.join(FORMATS)})")
    number, unit = FORMATS[fmt]
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        raise RecordError(f"{where}: not a number: {values!r}")
    lo, hi = number(min(values)), number(max(values))
    return f"{lo}{unit}" if lo == hi else f"{lo}–{hi}{unit}"


def fill(template: str, records: Records) -> str:
    """The template with every ``{...}`` placeholder replaced by the recorded value(s)."""

    def one(m: re.Match) -> str:
        body, _, fmt = m[1].rpartition("|") if "|" in m[1] else (m[1], "", None)
        if " / " in body:  # a ratio of two single values
            a, b = (records.values(side) for side in body.split(" / "))
            if len(a) != 1 or len(b) != 1 or not b[0]:
                raise RecordError(f"{body}: a ratio needs one value on each side, not zero below")
            return _format([a[0] / b[0]], fmt, body)
        return _format(records.values(body), fmt, body)

    return _PLACEHOLDER.sub(one, template)


def _cell(cell: Cell, records: Records) -> str:
    if isinstance(cell, Pending):
        return fill(cell.template, records) if records.exists(cell.needs) else cell.text
    return fill(cell, records)


def render(records: Records, rows: tuple[Row, ...] = ROWS) -> str:
    """The table, with the marker lines and a line naming the records it was read from."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for row in rows:
        if row.needs is not None and not records.exists(row.needs):
            continue
        cells = [_cell(c, records) for c in (row.what, row.fastaed, row.reference, row.target)]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    used = ", ".join(f"`{name}`" for name in sorted(records.cache))
    note = (
        f"Every number in this table is read from a record in `bench_results/` ({used}) by "
        "`fastaed bench readme` (the row templates and JSON paths: `fastaed/bench/results_table.py`); "
        "`fastaed bench readme --check` fails when the table and the records disagree. Numbers marked paper "
        "or quoted are not ours."
    )
    return "\n".join([BEGIN, *lines, "", note, END])


def current(text: str, source: str = "README.md") -> tuple[int, int]:
    """Start and end offsets of the marked block (markers included) in ``text``."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise RecordError(f"{source}: no results block ({BEGIN!r} ... {END!r})")
    return start, end + len(END)


@dataclass(frozen=True)
class ReadmeTableConfig:
    """Options of ``fastaed bench readme``."""

    readme: Path = field(default=Path("README.md"), metadata={"help": "document holding the marked table"})
    results: Path = field(default=Path("bench_results"), metadata={"help": "folder of the JSON records"})
    check: bool = field(
        default=False, metadata={"help": "write nothing; exit 1 if the table differs from the records"}
    )
    benchmarks: Path | None = field(
        default=None,
        metadata={"help": "document of the generated sections (default: BENCHMARKS.md beside it)"},
    )


def run(config: ReadmeTableConfig) -> dict[str, Any]:
    """Render the table; write it into the README unless ``check``. Returns whether it had drifted, the diff
    and the records used."""
    text = Path(config.readme).read_text()
    start, end = current(text, str(config.readme))
    records = Records(config.results)
    table = render(records)
    old = text[start:end]
    diff = "\n".join(
        difflib.unified_diff(old.splitlines(), table.splitlines(), "README (now)", "records", lineterm="")
    )
    if old != table and not config.check:
        Path(config.readme).write_text(text[:start] + table + text[end:])
    from fastaed.bench.adapt import update_section

    doc = config.benchmarks or Path(config.readme).parent / "BENCHMARKS.md"
    doc_drift = update_section(doc, records.load, records.exists, write=not config.check)
    diff += "\n" + doc_drift if doc_drift else ""
    return {"drift": old != table or bool(doc_drift), "diff": diff, "records": sorted(records.cache),
            "check": config.check, "benchmarks": str(doc), "benchmarks_drift": bool(doc_drift)}  # fmt: skip


def print_report(result: dict[str, Any]) -> None:
    if result.get("benchmarks_drift"):
        done = "differ from" if result["check"] else "re-rendered from"
        print(f"{result['benchmarks']}: generated sections {done} the records (diff below)")
    if not result["drift"]:
        print(f"results table matches the records ({len(result['records'])} files)")
    elif result["check"]:
        print("results table differs from the records (re-render: fastaed bench readme):")
        print(result["diff"])
    else:
        print("results table re-rendered from the records:")
        print(result["diff"])


def exit_status(result: dict[str, Any], config: ReadmeTableConfig) -> int:
    return 1 if result["drift"] and config.check else 0
