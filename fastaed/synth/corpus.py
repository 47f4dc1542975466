"""Plan and generate the synthetic speech corpus: presets, per-utterance seeds, parallel synthesis, manifests.

Layout written under the output folder::

    audio/<manifest>/<utt_id>.wav       16 kHz mono int16
    train.jsonl dev.jsonl test.jsonl    English; seen voices; disjoint sentences
    test_unseen_voice.jsonl             the test sentences spoken by the held-out voice (flite awb)
    train_multilingual.jsonl            espeak-ng de/es/fr (source_lang = target_lang = the language)
    test_multilingual.jsonl             ... on sentences not in train_multilingual
    card.json card.md duration_hist.png

The corpus is built in a hidden folder beside the output folder and renamed into place when complete
(``fastaed.util.outputs``): the output folder must be new, empty or an earlier corpus (which is then
replaced); a folder holding anything else is refused before any work.

Multilingual utterances live in their own manifests so that ``train.jsonl`` stays the English, CPU-budget
training set; a multilingual run concatenates ``train.jsonl`` and ``train_multilingual.jsonl``.

Every random choice for an utterance (voice, espeak accent and variant, rate, pitch) is drawn from a
generator seeded by a sha256 of (seed, utt_id), so an utterance's audio does not depend on worker count,
chunking or which other utterances are generated.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm import tqdm

from fastaed.constants import SAMPLE_RATE
from fastaed.data import errors
from fastaed.synth import engines, text
from fastaed.util.outputs import building_dir, check_output_dir

ENGLISH_MANIFESTS = ("train", "dev", "test", "test_unseen_voice")
MULTILINGUAL_MANIFESTS = ("train_multilingual", "test_multilingual")
ALL_MANIFESTS = ENGLISH_MANIFESTS + MULTILINGUAL_MANIFESTS
ESPEAK_ENGLISH = "espeak-ng/*"  # in voice weights: one of the espeak-ng English accents, chosen per utterance

# Seen English voices and their share of train/dev/test utterances. The clean voices (about as intelligible
# to pocketsphinx as real read speech) carry 90%; robotic espeak-ng accents are a 10% minority that adds
# variety without making the CPU-budget task much harder.
DEFAULT_VOICE_WEIGHTS: tuple[tuple[str, float], ...] = (
    ("flite/kal16", 0.15),
    ("flite/rms", 0.15),
    ("flite/slt", 0.15),
    ("festival/kal_diphone", 0.15),
    ("festival/ked_diphone", 0.15),
    ("festival/cmu_us_slt_arctic_hts", 0.15),
    (ESPEAK_ENGLISH, 0.10),
)
MULTILINGUAL_VOICES = {"de": "espeak-ng/de", "es": "espeak-ng/es", "fr": "espeak-ng/fr-fr"}


@dataclass(frozen=True)
class SynthPreset:
    """Corpus size and recipe. Counts are utterances; test sentences are also spoken by the unseen voice."""

    name: str
    n_train: int
    n_dev: int
    n_test: int
    n_multilingual_train: int  # per language
    n_multilingual_test: int  # per language
    top_n: int = 1000  # vocabulary: the N most frequent words of the pool (see text.word_ranking)
    min_words: int = 4
    max_words: int = 14
    rate_jitter: float = 0.15  # rate drawn uniformly from [1 - j, 1 + j]
    pitch_jitter: float = 0.15
    voice_weights: tuple[tuple[str, float], ...] = DEFAULT_VOICE_WEIGHTS
    unseen_voice: str = "flite/awb"
    languages: tuple[str, ...] = ("de", "es", "fr")
    vocab_top_ns: tuple[int, ...] = (500, 1000, 2000, 5000)  # measured for the card
    chunk_size: int = 24  # utterances per worker task (festival: one process per task)
    # (min, max) words: speak short phrases cut from the sentences instead of the sentences themselves
    phrase_words: tuple[int, int] | None = None


# top_n per preset comes from the vocabulary measurements in the card (restricted sentences are short: ~8
# words, ~2.6 s, so hours need more utterances than a 4-5 s corpus would):
#   small, 1.2k train sentences: N=500 -> 67% of the vocabulary seen >=5 times in train, 0.6% of dev/test
#     words unseen in train; N=1000 -> 36% and 1.8%.
#   default, 10k train utterances: N=1000 -> 88% seen >=5 times, 0.01% unseen, 7.6k distinct train
#     sentences; N=2000 -> 74% and 0.14%. The reference pilots say the CPU budget needs top 500-1k words.
PRESETS: dict[str, SynthPreset] = {
    # 41 utterances in a few seconds: unit tests and CI.
    "tiny": SynthPreset("tiny", n_train=20, n_dev=4, n_test=4, n_multilingual_train=2, n_multilingual_test=1),
    # ~1.7k utterances (~1.2 h) in under a minute on 2 cores.
    "small": SynthPreset(
        "small",
        n_train=1200,
        n_dev=100,
        n_test=100,
        n_multilingual_train=40,
        n_multilingual_test=10,
        top_n=500,
    ),
    # ~12k utterances (~8.5 h) in ~4-5 minutes on 2 cores: the CPU-budget training corpus.
    "default": SynthPreset(
        "default", n_train=10000, n_dev=400, n_test=500, n_multilingual_train=150, n_multilingual_test=30
    ),
    # ~3.2k English phrases of 1-3 words (~1 s each, ~1 h) cut from the default vocabulary's sentences: the
    # short inputs (single words, commands) fine-tuning on unpadded input must also cover (make finetune).
    "phrases": SynthPreset(
        "phrases",
        n_train=3000,
        n_dev=100,
        n_test=100,
        n_multilingual_train=0,
        n_multilingual_test=0,
        languages=(),
        phrase_words=(1, 3),
    ),
}


@dataclass(frozen=True)
class PlannedUtterance:
    """One utterance of the plan: the synthesis job plus what the manifest line needs."""

    manifest: str
    job: engines.SynthJob
    sentence: text.Sentence

    def manifest_entry(self, num_samples: int, sha1: str) -> dict:
        voice = engines.VOICES[self.job.voice]
        return {
            "audio_filepath": f"audio/{self.manifest}/{self.job.utt_id}.wav",
            "duration": round(num_samples / SAMPLE_RATE, 3),
            "text": self.sentence.text,
            "source_lang": self.sentence.lang,
            "target_lang": self.sentence.lang,
            "task": "transcribe",
            "pnc": "yes",
            "utt_id": self.job.utt_id,
            "voice": voice.name,
            "variant": self.job.variant,
            "engine": voice.engine,
            "rate": self.job.rate,
            "pitch": self.job.pitch,
            "sha1": sha1,
            "text_source": self.sentence.source,
        }


@dataclass
class CorpusPlan:
    preset: SynthPreset
    seed: int
    utterances: list[PlannedUtterance]
    vocabulary: list[str]  # the top-N words, most frequent first
    pool_stats: dict[str, int]
    english_pool: list[text.Sentence]  # clean sentences (any length), for the vocabulary measurements
    ranking: list[str]
    split_sentences: dict[str, int]  # distinct sentences per manifest
    skipped_languages: dict[str, str] = field(default_factory=dict)


def utt_rng(seed: int, utt_id: str) -> random.Random:
    """The random generator of one utterance: a sha256 of (seed, utt_id), never Python's salted hash()."""
    return random.Random(text.stable_hash(seed, "utt", utt_id))


def _jitter(rng: random.Random, amount: float) -> float:
    return round(rng.uniform(1.0 - amount, 1.0 + amount), 3)


def choose_voice(preset: SynthPreset, rng: random.Random) -> tuple[str, str | None]:
    """A seen English voice by weight; espeak-ng gets a random accent and variant."""
    names = [n for n, _ in preset.voice_weights]
    name = rng.choices(names, weights=[w for _, w in preset.voice_weights])[0]
    if name == ESPEAK_ENGLISH:
        accents = sorted(v for v in engines.VOICES if v.startswith("espeak-ng/en"))
        return rng.choice(accents), rng.choice(engines.ESPEAK_VARIANTS)
    return name, None


def make_job(
    preset: SynthPreset, seed: int, utt_id: str, sentence: text.Sentence, wav_path: Path, voice: str | None
) -> engines.SynthJob:
    """The job for one utterance. ``voice=None`` draws a seen English voice; all draws come from utt_rng."""
    rng = utt_rng(seed, utt_id)
    if voice is None:
        voice, variant = choose_voice(preset, rng)
    else:
        variant = rng.choice(engines.ESPEAK_VARIANTS) if engines.VOICES[voice].engine == "espeak-ng" else None
    rate, pitch = _jitter(rng, preset.rate_jitter), _jitter(rng, preset.pitch_jitter)
    return engines.SynthJob(utt_id, sentence.text, voice, rate, pitch, variant, str(wav_path))


def plan_corpus(preset: SynthPreset, seed: int, out_dir: Path) -> CorpusPlan:
    """Pick sentences, split them by sentence, and draw voice/rate/pitch for every utterance."""
    pool, pool_stats = text.english_pool()
    ranking = text.word_ranking(pool)
    vocab = ranking[: preset.top_n]
    usable = text.restrict_vocabulary(pool, frozenset(vocab), preset.min_words, preset.max_words)
    if preset.phrase_words is not None:
        usable = text.phrases(usable, seed, *preset.phrase_words)
    parts = text.split_by_sentence(
        usable, seed, {"test": preset.n_test, "dev": preset.n_dev, "train": preset.n_train}
    )
    if not parts["train"] or len(parts["test"]) < preset.n_test or len(parts["dev"]) < preset.n_dev:
        raise ValueError(
            f"top-{preset.top_n} vocabulary leaves {len(usable)} sentences of {preset.min_words}-"
            f"{preset.max_words} words: too few for {preset.n_test} test + {preset.n_dev} dev + train"
        )
    plan: list[PlannedUtterance] = []

    def add(manifest: str, i: int, sentence: text.Sentence, voice: str | None, tag: str = "") -> None:
        utt_id = f"{manifest}-{tag}{i:06d}"
        wav = out_dir / "audio" / manifest / f"{utt_id}.wav"
        plan.append(
            PlannedUtterance(manifest, make_job(preset, seed, utt_id, sentence, wav, voice), sentence)
        )

    # A short pool repeats train sentences (with other voices) rather than shrinking the held-out sets.
    for i in range(preset.n_train):
        add("train", i, parts["train"][i % len(parts["train"])], None)
    for i, s in enumerate(parts["dev"]):
        add("dev", i, s, None)
    for i, s in enumerate(parts["test"]):
        add("test", i, s, None)
        add("test_unseen_voice", i, s, preset.unseen_voice)

    skipped: dict[str, str] = {}
    for lang in preset.languages:
        try:
            lang_pool = text.length_filter(text.language_pool(lang), preset.min_words, preset.max_words)
        except text.SourceMissingError as e:
            skipped[lang] = str(e)  # reported in the card and at the end; English still gets generated
            continue
        ml = text.split_by_sentence(
            lang_pool,
            seed,
            {"test": preset.n_multilingual_test, "train": preset.n_multilingual_train},
            salt=lang,
        )
        # The language is part of the id, so a missing language does not renumber (and re-voice) the others.
        for manifest, sents in (("train_multilingual", ml["train"]), ("test_multilingual", ml["test"])):
            for i, s in enumerate(sents):
                add(manifest, i, s, MULTILINGUAL_VOICES[lang], tag=f"{lang}-")
    split_sentences = {m: len({u.sentence.key for u in plan if u.manifest == m}) for m in ALL_MANIFESTS}
    return CorpusPlan(preset, seed, plan, vocab, pool_stats, list(pool), ranking, split_sentences, skipped)


def chunk_jobs(jobs: Sequence[engines.SynthJob], chunk_size: int) -> list[list[engines.SynthJob]]:
    """Group jobs by voice (one festival voice load per chunk), then order chunks slowest first so the
    last worker does not finish long after the others."""
    by_voice: dict[str, list[engines.SynthJob]] = {}
    for j in jobs:
        by_voice.setdefault(j.voice, []).append(j)
    chunks = [
        group[i : i + chunk_size]
        for _, group in sorted(by_voice.items())
        for i in range(0, len(group), chunk_size)
    ]
    chunks.sort(key=lambda c: -sum(j.est_cpu_s() for j in c))
    return chunks


def _synthesize_chunk(chunk: list[engines.SynthJob]) -> list[engines.SynthOutcome]:
    return engines.synthesize_jobs(chunk)


def run_jobs(
    jobs: Sequence[engines.SynthJob], workers: int, chunk_size: int, progress: bool = True
) -> list[engines.SynthOutcome]:
    """Synthesize all jobs over ``workers`` processes (in this process when workers == 1), with a tqdm bar."""
    chunks = chunk_jobs(jobs, chunk_size)
    outcomes: list[engines.SynthOutcome] = []
    with tqdm(total=len(jobs), unit="utt", desc="synth", disable=not progress, smoothing=0.05) as bar:
        if workers <= 1:
            for chunk in chunks:
                outcomes.extend(engines.synthesize_jobs(chunk, on_done=bar.update))
        else:
            with multiprocessing.Pool(workers) as pool:
                for result in pool.imap_unordered(_synthesize_chunk, chunks):
                    outcomes.extend(result)
                    bar.update(len(result))
    return outcomes


@dataclass
class CorpusResult:
    out_dir: Path
    card: dict
    report: errors.BadInputReport
    manifests: dict[str, list[dict]]


CORPUS_FILES = frozenset(
    {"audio", "card.json", "card.md", "duration_hist.png", "vocab.txt"}
    | {f"{m}.jsonl" for m in ALL_MANIFESTS}
)


CORPUS_KIND = "synth corpus"  # its output kind (fastaed.util.outputs)


def is_corpus_folder(out_dir: Path) -> bool:
    """A corpus written before output folders carried a marker (possibly interrupted): only corpus names."""
    return all(p.name in CORPUS_FILES for p in out_dir.iterdir())


def check_out_dir(out_dir: Path) -> None:
    """Refuse (:class:`~fastaed.util.outputs.OutputExistsError`, a FileExistsError) an output folder that
    holds anything but an earlier corpus."""
    check_output_dir(out_dir, CORPUS_KIND, legacy=is_corpus_folder)


def write_manifest(path: Path, entries: Sequence[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for e in entries:
            f.write(json.dumps(e, ensure_ascii=False) + "\n")


def generate_corpus(
    out_dir: str | Path,
    preset: SynthPreset | str = "default",
    workers: int | None = None,
    seed: int = 0,
    progress: bool = True,
    only: Sequence[str] | None = None,
) -> CorpusResult:
    """Generate the corpus into ``out_dir`` and return its card, skip report and manifest entries.

    ``only`` restricts synthesis to these utterance ids (the plan, hence every id's audio, is unchanged):
    handy to regenerate or test single utterances.
    """
    t_start = time.perf_counter()
    preset = PRESETS[preset] if isinstance(preset, str) else preset
    workers = max(1, workers or os.cpu_count() or 1)
    out_dir = Path(out_dir)
    check_out_dir(out_dir)
    with building_dir(out_dir, CORPUS_KIND, "synth", legacy=is_corpus_folder) as tmp:
        (tmp / "audio").mkdir()
        card, report, manifests = _generate(tmp, out_dir, preset, workers, seed, progress, only, t_start)
    return CorpusResult(out_dir, card, report, manifests)


def _generate(
    tmp: Path,
    out_dir: Path,
    preset: SynthPreset,
    workers: int,
    seed: int,
    progress: bool,
    only: Sequence[str] | None,
    t_start: float,
) -> tuple[dict, errors.BadInputReport, dict[str, list[dict]]]:
    """Synthesize into ``tmp`` (renamed to ``out_dir`` when done); the card, skip report and manifests."""
    from fastaed.synth import card as card_mod  # plotting imports matplotlib: keep it off the hot path

    plan = plan_corpus(preset, seed, tmp)
    wanted = None if only is None else set(only)
    planned = [u for u in plan.utterances if wanted is None or u.job.utt_id in wanted]
    engines.require_engines({u.job.voice for u in planned})
    t_plan = time.perf_counter() - t_start

    t0 = time.perf_counter()
    outcomes = {o.utt_id: o for o in run_jobs([u.job for u in planned], workers, preset.chunk_size, progress)}
    t_synth = time.perf_counter() - t0

    report = errors.BadInputReport()
    manifests: dict[str, list[dict]] = {m: [] for m in ALL_MANIFESTS}
    for u in planned:  # plan order: manifests are sorted by utt_id whatever order the workers finished in
        o = outcomes[u.job.utt_id]
        if o.ok:
            manifests[u.manifest].append(u.manifest_entry(o.num_samples, o.sha1))
        else:
            where = out_dir / Path(u.job.wav_path).relative_to(tmp)  # where it would have been
            report.add(errors.BadInputError(o.reason, o.detail, path=str(where)))
    for name, entries in manifests.items():
        write_manifest(tmp / f"{name}.jsonl", entries)

    card = card_mod.build_card(
        plan, manifests, report, tool_times={"plan_s": t_plan, "synth_s": t_synth}, workers=workers
    )
    card["generation"]["wall_s"] = round(time.perf_counter() - t_start, 1)
    card_mod.write_card(tmp, card, manifests, plan.vocabulary)
    return card, report, manifests


def plan_summary(plan: CorpusPlan) -> dict:
    """Counts per manifest of a plan (no synthesis), e.g. to preview a preset."""
    counts: dict[str, int] = {}
    for u in plan.utterances:
        counts[u.manifest] = counts.get(u.manifest, 0) + 1
    return {"preset": asdict(plan.preset), "utterances": counts, "sentences": plan.split_sentences}
