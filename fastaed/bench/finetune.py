"""``fastaed bench finetune``: fine-tuning a pretrained Whisper three ways on the same weights, data, thread
count and training wall time, then what each model is worth.

Recipes:

* ``bucketed`` (fastaed): ``fastaed train`` on ``configs/finetune_whisper_tiny.yaml``: 2D bucketing,
  per-bucket batch sizes (a ``--profile`` or the duration budget), unpadded Whisper input;
* ``padded`` (baseline a): the same trainer fed the standard recipe's shapes: every input 30 s
  (``model.frontend_input=padded``) and a fixed batch of ``padded_batch_size`` utterances, shuffled;
* ``hf`` (baseline b): Hugging Face ``Seq2SeqTrainer`` with ``WhisperFeatureExtractor`` and the usual speech
  seq2seq collator, in ``.venv-whisper`` (``make whisper-venv``), on a Hugging Face folder written from the
  same checkpoint (``fastaed export hf``), batch ``padded_batch_size``, the YAML's optimiser settings.

Like for like: every recipe trains in its own process tree with the same number of data-loading worker
processes (the YAML's ``runtime.num_workers``: fastaed's DataLoader workers, ``dataloader_num_workers`` of
the Hugging Face Trainer), and its peak memory is the peak of the whole tree's summed resident memory
(trainer + loader workers, sampled every ``TreePeak.interval_s``), not the trainer process's own
``ru_maxrss``. Reported per recipe: training audio seconds per second, input padding (for 30 s inputs
counted against the 30 s the encoder computes), output padding, mean batch size, peak resident memory of the
process tree, steps, and the greedy dev WER after the equal wall time (each model decoded
by fastaed in the input shape it was trained with; the ``hf`` model is imported back first). Then the real-
speech table (``fastaed.bench.finetune_eval``): the original model padded and unpadded, the bucketed model
unpadded, on real recordings never trained on. Targets (issue 15): bucketed >= 4x the audio throughput of
``padded`` and >= 5x of ``hf`` at equal or better dev WER; unpadded real-speech WER of the fine-tuned model
within 1 point of the original padded model's.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastaed.bench.finetune_eval import (
    fastaed_curve,
    hf_curve,
    markdown_section,
    plot_curves,
    score_checkpoint,
    update_markdown,
)
from fastaed.data.manifest import iter_lines, parse_line, read_manifest
from fastaed.train.config import TrainConfig
from fastaed.util.tables import format_table, pct

if TYPE_CHECKING:
    from fastaed.bench.peers.hf_finetune import HFFinetuneConfig

RECIPES = ("bucketed", "padded", "hf", "distilled")
RECIPE_LABELS = {
    "bucketed": "fastaed: 2D buckets, unpadded",
    "distilled": "fastaed: 2D buckets, unpadded, + distillation from the padded original",
    "padded": "(a) fastaed: 30 s padded, fixed batch",
    "hf": "(b) HF Seq2SeqTrainer: 30 s padded, fixed batch",
}
TRAINED_INPUT = {"bucketed": "unpadded", "padded": "padded", "hf": "padded", "distilled": "unpadded"}
WINDOW_S = 30.0  # Whisper's padded input
TARGETS = {"over_padded": 4.0, "over_hf": 5.0, "real_wer_points": 1.0}
MARKDOWN_HEADING = "## Fine-tuning Whisper: bucketed vs 30 s padding vs Hugging Face (issue 15)"
# Real speech never trained on: the pocketsphinx clips and the held-out half of the Asterisk prompts (the
# other half is the distilled recipe's replay audio)
DEFAULT_REAL = (Path("data/real/real_check.jsonl"), Path("data/real/asterisk.heldout.jsonl"))
DEFAULT_REPLAY = (Path("data/real/asterisk.adapt.jsonl"),)


@dataclass(frozen=True)
class FinetuneBenchConfig:
    """Options of ``fastaed bench finetune``."""

    config: Path = field(
        default=Path("configs/finetune_whisper_tiny.yaml"), metadata={"help": "fine-tuning recipe (YAML)"}
    )
    checkpoint: Path | None = field(
        default=None,
        metadata={"help": "checkpoint to fine-tune (default: Whisper --model, fetched+imported)"},
    )
    model: str = field(default="tiny.en", metadata={"help": "Whisper release fetched when no --checkpoint"})
    train_manifests: tuple[Path, ...] = field(
        default=(Path("data/default/train.jsonl"),), metadata={"help": "training data (NeMo manifests)"}
    )
    dev_manifest: Path = field(default=Path("data/default/dev.jsonl"), metadata={"help": "dev data (WER)"})
    recipes: tuple[str, ...] = field(
        default=RECIPES, metadata={"help": "recipes to run (bucketed padded hf distilled)"}
    )
    time_budget_s: float = field(default=180.0, metadata={"help": "training wall time per recipe (s)"})
    max_steps: int = field(default=100_000, metadata={"help": "step cap per recipe"})
    threads: int = field(default=2, metadata={"help": "torch threads of each run (and of the decodes)"})
    max_duration: float = field(default=60.0, metadata={"help": "bucketed: seconds of audio per batch"})
    profile: Path | None = field(
        default=None, metadata={"help": "bucketed: batch-size profile (fastaed batch-sizes) to train with"}
    )
    padded_batch_size: int = field(
        default=8, metadata={"help": "padded and hf recipes: utterances per batch"}
    )
    dev_max_utts: int = field(default=100, metadata={"help": "dev utterances decoded for WER"})
    real_manifests: tuple[Path, ...] = field(
        default=DEFAULT_REAL, metadata={"help": "real-speech sets for the WER table (missing ones skipped)"}
    )
    real_max_utts: int = field(default=100, metadata={"help": "utterances per real set (spread; 0: all)"})
    replay_manifests: tuple[Path, ...] = field(
        default=DEFAULT_REPLAY,
        metadata={"help": "distilled: other audio kept, labelled by the original (missing ones skipped)"},
    )
    replay_share: float = field(
        default=0.2, metadata={"help": "distilled: share of the training draws that are replay clips"}
    )
    distilled_init: Path | None = field(
        default=None,
        metadata={"help": "distilled: start from this checkpoint (e.g. fastaed adapt's); teacher: original"},
    )
    out_dir: Path = field(default=Path("runs/bench-finetune"), metadata={"help": "one run folder per recipe"})
    png: Path | None = field(default=None, metadata={"help": "learning curves (default: OUT_DIR/curves.png)"})
    json: Path | None = field(default=None, metadata={"help": "write the results here"})
    markdown: Path | None = field(
        default=None, metadata={"help": "write the tables into this Markdown file's marked section"}
    )

    def __post_init__(self) -> None:
        unknown = set(self.recipes) - set(RECIPES)
        if unknown or not self.recipes:
            raise ValueError(f"recipes: choose from {', '.join(RECIPES)}, got {', '.join(self.recipes)}")
        if not 0 <= self.replay_share < 1:
            raise ValueError(f"replay_share must be in [0, 1), got {self.replay_share}")


def _children_by_scan() -> dict[int, list[int]]:
    """Every process's children, from each ``/proc/PID/stat``'s parent field (any Linux kernel)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:  # the process ended while we looked
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])  # after "pid (comm) state": ppid
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def _children(pid: int) -> list[int]:
    """The children of ``pid`` from ``/proc/PID/task/*/children`` (a few reads, not a scan of /proc)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:  # the task ended while we looked
            continue
    return found


def _descendants(root: int) -> list[int]:
    """Every process below ``root`` (children, their children, ...), from ``/proc`` (Linux)."""
    has_children_files = any(Path("/proc/self/task").glob("*/children"))  # CONFIG_PROC_CHILDREN
    tree = None if has_children_files else _children_by_scan()
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        kids = _children(pid) if tree is None else tree.get(pid, [])
        found += kids
        todo += kids
    return found


def tree_rss_bytes(root: int, *, include_root: bool = True) -> int:
    """Summed resident memory of ``root`` and every process below it (pages shared by a fork count twice,
    as a per-process RSS sum does)."""
    page = os.sysconf("SC_PAGE_SIZE")
    total = 0
    for pid in ([root] if include_root else []) + _descendants(root):
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * page
        except (OSError, IndexError, ValueError):  # gone meanwhile
            continue
    return total


class TreePeak:
    """Peak summed RSS of a process tree while the ``with`` block runs (sampled in a thread).

    ``root`` defaults to this process with ``include_root=False``: what a recipe started from here uses, its
    trainer and every worker it forks, whatever runs it (``subprocess`` or the peer client). A peak shorter
    than ``interval_s`` can be missed; the trainers' peaks last whole steps."""

    def __init__(self, root: int | None = None, *, include_root: bool = False, interval_s: float = 0.05):
        self.root = os.getpid() if root is None else root
        self.include_root, self.interval_s = include_root, interval_s
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while True:
            now = tree_rss_bytes(self.root, include_root=self.include_root)
            self.peak_bytes = max(self.peak_bytes, now)
            if self._stop.wait(self.interval_s):
                return

    def __enter__(self) -> TreePeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_mb(self) -> float:
        return self.peak_bytes / 2**20


def loader_workers(config: FinetuneBenchConfig) -> int:
    """Data-loading worker processes of every recipe: the YAML's ``runtime.num_workers``."""
    return TrainConfig.from_yaml(config.config).runtime.num_workers


def _durations(manifest: Path) -> list[float]:
    return [u.duration for u in read_manifest(manifest)]  # a bad line: an error naming file, line, field


def one_manifest(manifests: tuple[Path, ...], out: Path) -> Path:
    """The manifests as one file with absolute audio paths (the Hugging Face runner reads one manifest).

    Every line is validated as the trainer reads it: a bad one raises BadInputError naming file and line."""
    if len(manifests) == 1:
        return manifests[0]
    with open(out, "w") as f:
        for manifest in manifests:
            base_dir = str(Path(manifest).parent.absolute())
            for number, _, raw in iter_lines(manifest):
                utt = parse_line(raw, path=str(manifest), line=number, base_dir=base_dir)
                entry = json.loads(raw)  # every field kept; only the audio path is made absolute
                entry["audio_filepath"] = str(Path(utt.audio_filepath).resolve())
                f.write(json.dumps(entry) + "\n")
    return out


def recipe_overrides(config: FinetuneBenchConfig, recipe: str, checkpoint: Path) -> list[str]:
    """``fastaed train`` overrides of a fastaed recipe (the same data, weights, threads and budget for both).

    No dev set during training: every model is scored afterwards by the same decode (finetune_eval)."""
    # distilled --distilled-init: an unpadded start (fastaed adapt's output) learns the new data; the teacher
    # stays the original
    start = config.distilled_init if recipe == "distilled" and config.distilled_init else checkpoint
    common = [
        f"model.init_from={start}",
        f"data.train_manifests=[{','.join(map(str, config.train_manifests))}]",
        "data.dev_manifest=null",
        f"runtime.out_dir={config.out_dir / recipe}",
        f"runtime.threads={config.threads}",
        f"runtime.num_workers={loader_workers(config)}",
        f"runtime.time_budget_s={config.time_budget_s}",
        f"optim.max_steps={config.max_steps}",
        "runtime.device=cpu",
        "runtime.progress=false",
        "runtime.eval_every=0",
        "runtime.ckpt_every=0",
    ]
    if recipe in ("bucketed", "distilled"):
        budget = [f"sampler.max_duration={config.max_duration}"]
        if config.profile is not None:
            budget.append(f"sampler.profile={config.profile}")
        # distilled: the same run plus KL + state terms against the original on its padded input, so the
        # new data is learnt without forgetting what the original knew (fastaed.train.distill)
        teacher = [
            f"distill.teacher={checkpoint}",
            "distill.teacher_input=padded",
            "distill.state_weight=1.0",
            "distill.cache=lazy",  # in the budget: the teacher runs on what the run reaches, once per clip
            *replay_overrides(config),
        ]
        return [
            *common,
            "model.frontend_input=unpadded",
            *budget,
            *(teacher if recipe == "distilled" else []),
        ]
    # One bucket whose longest utterance fits padded_batch_size times: a fixed batch size, shuffled.
    longest = max(max(_durations(m)) for m in config.train_manifests)
    budget = config.padded_batch_size * longest * (1 + 1e-6)
    return [
        *common,
        "model.frontend_input=padded",
        "sampler.num_buckets=1",
        "sampler.num_subbuckets=1",
        "sampler.method=equal_mass",
        "sampler.profile=null",
        f"sampler.max_duration={budget}",
    ]


def replay_overrides(config: FinetuneBenchConfig) -> list[str]:
    """``distill.replay_manifests`` of the distilled recipe: the replay sets that exist, weighted so that
    together they are ``replay_share`` of the draws (``fastaed.sampling.weights``: a weight is copies per
    utterance against the training manifests' 1)."""
    replay = [Path(m) for m in config.replay_manifests if Path(m).is_file()]
    if not replay or config.replay_share == 0:
        return []
    n_train = sum(len(_durations(m)) for m in config.train_manifests)
    n_replay = sum(1 for m in replay for _ in iter_lines(m))  # entries (transcripts not needed)
    weight = max(config.replay_share / (1 - config.replay_share) * n_train / n_replay, 1.0)
    return [f"distill.replay_manifests=[{','.join(f'{m}:{weight:.4g}' for m in replay)}]"]


def check_replay_apart(config: FinetuneBenchConfig) -> None:
    """Refuse replay audio that is also scored as real speech never trained on (naming file and line).

    Replay entries are read as the replay labelling reads them (``choose_clips``: no transcript needed; an
    entry it cannot use is never replayed, and the run's replay report counts it)."""
    from fastaed.data.errors import BadInputReport
    from fastaed.train.teacher_labels import choose_clips

    scored: dict[str, str] = {}
    for manifest in (Path(m) for m in config.real_manifests if Path(m).is_file()):
        for u in read_manifest(manifest):
            scored.setdefault(str(Path(u.audio_filepath).resolve()), f"{manifest}:{u.line}")
    for manifest in (Path(m) for m in config.replay_manifests if Path(m).is_file()):
        for u, _ in choose_clips([manifest], False, sys.maxsize, 0, BadInputReport()):
            where = scored.get(str(Path(u.audio_filepath).resolve()))
            if where is not None:
                raise ValueError(
                    f"{manifest}:{u.line}: replay audio {u.audio_filepath} is also scored as unseen real "
                    f"speech ({where}); replay only audio kept apart from --real-manifests"
                )


def _run_fastaed(config: FinetuneBenchConfig, recipe: str, checkpoint: Path) -> dict[str, Any]:
    """Train a fastaed recipe in its own process; its summary, with 30 s inputs counted as computed."""
    out = config.out_dir / recipe
    command = [sys.executable, "-m", "fastaed.cli.train", "--config", str(config.config), "--resume", "none"]
    command += recipe_overrides(config, recipe, checkpoint)
    with TreePeak() as peak:  # the trainer and its DataLoader workers
        done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"fastaed train ({recipe}) failed:\n{done.stderr[-3000:]}")
    s = json.loads((out / "summary.json").read_text())
    audio_s = s["audio_hours_seen"] * 3600
    input_padding = s["input_padding"]
    if recipe == "padded":  # the encoder computes 30 s per utterance, whatever the audio's length
        input_padding = 1 - audio_s / max(s["utterances_seen"] * WINDOW_S, 1e-9)
    latest = (out / "latest").read_text().strip() if (out / "latest").is_file() else None
    return {
        "recipe": recipe,
        "steps": s["steps"],
        "train_time_s": s["train_time_s"],
        "audio_s": audio_s,
        "audio_s_per_s": s["audio_s_per_s"],
        "input_padding": input_padding,
        "output_padding": s["output_padding"],
        "mean_batch_size": s["mean_batch_size"],
        "peak_mem_mb": peak.peak_mb,
        "peak_mem_mb_trainer_process": s["peak_mem_mb"],
        "loader_workers": loader_workers(config),
        "final_train_loss": s.get("final_train_loss"),
        "model": str(out / latest) if latest else str(out),
        "curve": fastaed_curve(out),
        **({"replay": s["replay"]} if s.get("replay") else {}),  # distilled: replay sets, clips, drops
        "init_from": next(o.split("=", 1)[1] for o in command if o.startswith("model.init_from=")),
    }


def hf_recipe_config(config: FinetuneBenchConfig) -> HFFinetuneConfig:
    """The Hugging Face recipe's settings: the YAML's optimiser, the bench's batch, threads, budget and the
    same number of data-loading workers as fastaed's recipes."""
    from fastaed.bench.peers.hf_finetune import HFFinetuneConfig

    optim = TrainConfig.from_yaml(config.config).optim
    return HFFinetuneConfig(
        batch_size=config.padded_batch_size, lr=optim.lr, warmup_steps=optim.warmup_steps,
        betas=tuple(optim.betas), weight_decay=optim.weight_decay, grad_clip=optim.grad_clip,
        max_steps=config.max_steps, time_budget_s=config.time_budget_s, threads=config.threads,
        dataloader_workers=loader_workers(config),
    )  # fmt: skip


def _run_hf(config: FinetuneBenchConfig, checkpoint: Path, work: Path) -> dict[str, Any]:
    """Baseline (b): export the checkpoint for transformers, train there, import the result back."""
    from fastaed.bench.peers.hf_finetune import run_hf_finetune
    from fastaed.formats.whisper_import import export_hf, import_whisper

    hf_in = export_hf(checkpoint, work / "hf-start")
    out = config.out_dir / "hf"
    hf_config = hf_recipe_config(config)
    manifest = one_manifest(config.train_manifests, work / "train.jsonl")
    with TreePeak() as peak:  # the peer's python and its DataLoader workers
        s = run_hf_finetune(hf_in, manifest, out, hf_config)
    model = import_whisper(out / "model", out / "fastaed-model")
    return {
        "recipe": "hf",
        "steps": s["steps"],
        "train_time_s": s["train_time_s"],
        "audio_s": s["audio_s"],
        "audio_s_per_s": s["audio_s_per_s"],
        "input_padding": s["input_padding"],
        "output_padding": s["output_padding"],
        "mean_batch_size": s["mean_batch_size"],
        "peak_mem_mb": peak.peak_mb,
        "peak_mem_mb_trainer_process": s["peak_mem_mb"],
        "loader_workers": hf_config.dataloader_workers,
        "final_train_loss": s.get("final_loss"),
        "model": str(model),
        "versions": s.get("versions"),
        "curve": hf_curve(out),
    }


def _checkpoint(config: FinetuneBenchConfig, tmp: Path) -> Path:
    if config.checkpoint is not None:
        return config.checkpoint
    from fastaed.formats.fetch import fetch_whisper
    from fastaed.formats.whisper_import import import_whisper

    return import_whisper(fetch_whisper(config.model), tmp / "checkpoint")


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def _comparisons(by: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Bucketed over each baseline: throughput and batch-size ratios, the target, WER equal or better."""
    b = by.get("bucketed")
    out: dict[str, Any] = {}
    for name, target in (("padded", TARGETS["over_padded"]), ("hf", TARGETS["over_hf"])):
        if b is None or name not in by:
            continue
        other = by[name]
        throughput = _ratio(b["audio_s_per_s"], other["audio_s_per_s"])
        out[name] = {
            "audio_s_per_s": throughput,
            "mean_batch_size": _ratio(b["mean_batch_size"], other["mean_batch_size"]),
            "throughput_target": target,
            "throughput_met": throughput is not None and throughput >= target,
            "dev_wer_equal_or_better": b["dev_wer"] <= other["dev_wer"],
        }
    return out


def _real_table(config: FinetuneBenchConfig, original: Path, by: dict[str, Any]) -> list[dict[str, Any]]:
    """Real-speech WER per set: the original padded and unpadded; each fine-tuned model in the shape it was
    trained in (the padded recipe's too: domain shift and padding are then told apart)."""
    models = [("original", original, "padded"), ("original", original, "unpadded")]
    for recipe in ("bucketed", "distilled", "padded"):
        if recipe in by:
            models.append((f"fine-tuned ({recipe})", Path(by[recipe]["model"]), TRAINED_INPUT[recipe]))
    rows = []
    for manifest in (m for m in config.real_manifests if Path(m).is_file()):
        for name, path, shape in models:
            scored = score_checkpoint(path, Path(manifest), shape, config.real_max_utts)
            rows.append({"model": name, **scored})
    return rows


def _real_verdict(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per set: each unpadded fine-tuned model's WER minus the original padded WER (points), against the
    1-point target (``points``/``met``: the bucketed recipe, as before; ``by_recipe``: every one)."""
    verdict = {}
    for manifest in dict.fromkeys(r["manifest"] for r in rows):
        get = {(r["model"], r["input"]): r["wer"] for r in rows if r["manifest"] == manifest}
        base = get.get(("original", "padded"))
        by_recipe = {}
        for recipe in ("bucketed", "distilled"):
            tuned = get.get((f"fine-tuned ({recipe})", "unpadded"))
            if base is not None and tuned is not None:
                points = 100 * (tuned - base)
                by_recipe[recipe] = {"points": points, "met": points <= TARGETS["real_wer_points"]}
        if by_recipe:
            verdict[manifest] = {**by_recipe.get("bucketed", {}), "by_recipe": by_recipe}
    return verdict


def run(config: FinetuneBenchConfig) -> dict[str, Any]:
    import torch

    for path in (config.config, *config.train_manifests, config.dev_manifest):
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path}: not found (the demo corpus: make demo, or fastaed synth)")
    if "distilled" in config.recipes:
        check_replay_apart(config)
    recipes, skipped = list(config.recipes), {}
    if "hf" in recipes:
        from fastaed.bench.peers.hf_finetune import hf_peer_python

        if hf_peer_python() is None:
            recipes.remove("hf")
            skipped["hf"] = "no .venv-whisper with transformers (make whisper-venv)"
    torch.set_num_threads(config.threads)
    with tempfile.TemporaryDirectory(prefix="fastaed-finetune-bench-") as tmp:
        checkpoint = _checkpoint(config, Path(tmp))
        runs = [
            _run_hf(config, checkpoint, Path(tmp)) if r == "hf" else _run_fastaed(config, r, checkpoint)
            for r in recipes
        ]
        by = {r["recipe"]: r for r in runs}
        for r in runs:
            scored = score_checkpoint(
                Path(r["model"]), config.dev_manifest, TRAINED_INPUT[r["recipe"]], config.dev_max_utts
            )
            r["dev_wer"], r["dev_input"] = scored["wer"], scored["input"]
        original_dev = {
            shape: score_checkpoint(checkpoint, config.dev_manifest, shape, config.dev_max_utts)["wer"]
            for shape in ("padded", "unpadded")
        }
        real = _real_table(config, checkpoint, by)
    png = plot_curves(
        {r["recipe"]: r.pop("curve") for r in runs},
        RECIPE_LABELS,
        config.png or config.out_dir / "curves.png",
    )
    result = {
        "config": {k: _plain(v) for k, v in config.__dict__.items()},
        "checkpoint": str(config.checkpoint or config.model),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
        "threads": config.threads,
        "runs": runs,
        "skipped_recipes": skipped,
        "original_dev_wer": original_dev,
        "comparisons": _comparisons(by),
        "real_speech": real,
        "real_speech_verdict": _real_verdict(real),
        "real_sets_missing": [str(m) for m in config.real_manifests if not Path(m).is_file()],
        "targets": TARGETS,
        "png": str(png),
    }
    if config.markdown is not None:
        command = " ".join(["fastaed", *sys.argv[1:]]) if sys.argv[0].endswith("fastaed") else "fastaed bench"
        png_link = os.path.relpath(png, Path(config.markdown).parent)
        section = markdown_section(result, RECIPE_LABELS, command, png_link)
        update_markdown(Path(config.markdown), section, MARKDOWN_HEADING)
    return result


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def print_report(result: dict[str, Any]) -> None:
    header = ["recipe", "steps", "audio s/s", "in pad", "out pad", "batch", "peak MB (tree)", "dev WER"]
    rows = [
        [
            RECIPE_LABELS[r["recipe"]], r["steps"], f"{r['audio_s_per_s']:.2f}", pct(r["input_padding"]),
            pct(r["output_padding"]), f"{r['mean_batch_size']:.1f}", f"{r['peak_mem_mb']:.0f}",
            f"{pct(r['dev_wer'])} ({r['dev_input']})",
        ]
        for r in result["runs"]
    ]  # fmt: skip
    original = result["original_dev_wer"]
    rows.append(["original (no fine-tuning)", 0, "-", "-", "-", "-", "-",
                 f"{pct(original['padded'])} (padded), {pct(original['unpadded'])} (unpadded)"])  # fmt: skip
    print(
        f"fine-tuning {result['checkpoint']}, equal training wall time per recipe, "
        f"{result['threads']} threads"
    )
    print(format_table(header, rows))
    for name, c in result["comparisons"].items():
        verdict = "met" if c["throughput_met"] else "MISSED"
        wer = "equal or better" if c["dev_wer_equal_or_better"] else "WORSE"
        print(
            f"bucketed / {name}: audio throughput {c['audio_s_per_s']:.2f}x (target >= "
            f"{c['throughput_target']:.0f}x: {verdict}), batch size {c['mean_batch_size']:.2f}x, "
            f"dev WER {wer}"
        )
    for name, why in result["skipped_recipes"].items():
        print(f"not run: {name}: {why}")
    for manifest in result.get("real_sets_missing", []):
        print(f"real set not scored: {manifest} does not exist (fastaed data real-check / make apt)")
    if result["real_speech"]:
        real_rows = [
            [
                Path(r["manifest"]).name,
                r["model"],
                r["input"],
                r["utterances"],
                pct(r["wer"]),
                f"{r['rtfx']:.1f}",
            ]
            for r in result["real_speech"]
        ]
        print("real speech (never trained on):")
        print(format_table(["set", "model", "input", "utts", "WER", "RTFx"], real_rows))
        for manifest, v in result["real_speech_verdict"].items():
            for recipe, r in v.get("by_recipe", {}).items():
                verdict = "met" if r["met"] else "MISSED"
                target = TARGETS["real_wer_points"]
                print(f"{Path(manifest).name}: fine-tuned ({recipe}) unpadded - original padded = "
                      f"{r['points']:+.1f} points (target <= +{target:.0f}: {verdict})")  # fmt: skip
    print(f"learning curves: {result['png']}")
