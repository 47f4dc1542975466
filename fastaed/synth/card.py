"""The corpus card: ``card.json`` (for programs), ``card.md`` (for people), ``duration_hist.png``, vocab.txt.

Everything in it is measured from the written manifests, not copied from the plan.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import statistics
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from fastaed.data import errors
from fastaed.synth import engines, text

if TYPE_CHECKING:
    from fastaed.synth.corpus import CorpusPlan

DEBIAN_PACKAGES = (
    "flite",
    "espeak-ng",
    "festival",
    "festvox-kallpc16k",
    "festvox-kdlpc16k",
    "festvox-us-slt-hts",
    "sox",
    "wordnet-base",
    "fortunes",
    "fortunes-min",
    "bible-kjv",
    "bible-kjv-text",
    "fortunes-de",
    "fortunes-es",
    "asterisk-core-sounds-fr",
)

DESIGN_NOTES = [
    "Split by sentence: a sentence (same words, ignoring case and punctuation) is in only one of "
    "train/dev/test; short pools repeat train sentences with other voices instead of shrinking dev/test.",
    "train/dev/test use the seen voices: flite kal16/rms/slt and festival kal/ked/slt-hts (90%), espeak-ng "
    "English accents with random variants (10%, a robotic minority for variety).",
    "test_unseen_voice: every test sentence spoken by the held-out voice flite/awb (Scottish male).",
    "Multilingual prompts: espeak-ng de/es/fr in train_multilingual.jsonl and test_multilingual.jsonl "
    "(sentence-disjoint), kept out of train.jsonl so the English CPU-budget set stays English.",
    "Text: WordNet examples, fortunes and KJV clauses; no digits, symbols, abbreviations, initials, acronyms "
    "or dashes; each target starts upper case and ends in . ! or ?; double quotes removed; words in top-N.",
    "French text: Debian main has no French fortunes or prose corpus; the transcripts of the Asterisk "
    "fr-CA telephony prompts (asterisk-core-sounds-fr) are used, so French is short and telephony-flavoured.",
    "Vocabulary size: top_n is a preset field set from the measurements table: default uses N=1000 (88% of "
    "the words occur >=5 times in 10k train utterances, 0.01% of dev/test words unseen; N=2000 gives 74%), "
    "small uses N=500 (1.2k train sentences see too few of 1000 words); reference pilots: 500-1k.",
    "Determinism: every choice for an utterance comes from sha256(seed, utt_id); sha1 is of the int16 "
    "samples.",
]


def _hours(seconds: float) -> float:
    return round(seconds / 3600.0, 3)


def _duration_stats(durations: Sequence[float]) -> dict:
    if not durations:
        return {}
    qs = statistics.quantiles(durations, n=20) if len(durations) > 1 else [durations[0]] * 19
    return {
        "mean": round(statistics.fmean(durations), 3),
        "min": round(min(durations), 3),
        "p05": round(qs[0], 3),
        "p95": round(qs[-1], 3),
        "max": round(max(durations), 3),
        "share_1_to_15s": round(sum(1.0 <= d <= 15.0 for d in durations) / len(durations), 4),
    }


def manifest_stats(entries: Sequence[Mapping]) -> dict:
    voices: dict[str, dict] = defaultdict(lambda: {"utterances": 0, "hours": 0.0})
    seconds: Counter = Counter()
    for e in entries:
        voices[e["voice"]]["utterances"] += 1
        seconds[e["voice"]] += e["duration"]
    for v, s in seconds.items():
        voices[v]["hours"] = _hours(s)
    durations = [e["duration"] for e in entries]
    return {
        "utterances": len(entries),
        "hours": _hours(sum(durations)),
        "sentences": len({text.words_of(e["text"], e["source_lang"]) for e in entries}),
        "duration_s": _duration_stats(durations),
        "languages": dict(Counter(e["source_lang"] for e in entries)),
        "text_sources": dict(Counter(e["text_source"] for e in entries)),
        "voices": dict(sorted(voices.items())),
    }


def voice_stats(manifests: Mapping[str, Sequence[Mapping]]) -> dict:
    """Per voice over all manifests: utterances, hours and speaking rate in characters per second."""
    agg: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0])
    for entries in manifests.values():
        for e in entries:
            a = agg[e["voice"]]
            a[0] += 1
            a[1] += e["duration"]
            a[2] += len(e["text"])
    return {
        v: {"utterances": int(n), "hours": _hours(s), "chars_per_second": round(c / s, 2) if s else None}
        for v, (n, s, c) in sorted(agg.items())
    }


def _versions() -> dict:
    py = {}
    for pkg in ("numpy", "soundfile", "matplotlib", "tqdm"):
        try:
            py[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            py[pkg] = "not installed"
    return {
        "engines": engines.tool_versions(),
        "debian_packages": engines.package_versions(DEBIAN_PACKAGES),
        "python": platform.python_version(),
        "python_packages": py,
    }


def build_card(
    plan: CorpusPlan,
    manifests: Mapping[str, Sequence[Mapping]],
    report: errors.BadInputReport,
    tool_times: Mapping[str, float],
    workers: int,
) -> dict:
    preset = plan.preset
    train = manifests.get("train", [])
    train_s = sum(e["duration"] for e in train)
    cps = sum(len(e["text"]) for e in train) / train_s if train_s else None
    n_train_sentences = plan.split_sentences.get("train", 0)
    measurements = text.measure_vocabulary(
        plan.english_pool,
        plan.ranking,
        sorted(set(preset.vocab_top_ns) | {preset.top_n}),
        preset.min_words,
        preset.max_words,
        plan.seed,
        {"test": preset.n_test, "dev": preset.n_dev, "train": preset.n_train},
        chars_per_second=cps,
    )
    total_s = sum(e["duration"] for entries in manifests.values() for e in entries)
    n_utts = sum(len(v) for v in manifests.values())
    return {
        "name": f"fastaed synth ({preset.name})",
        "preset": asdict(preset),
        "seed": plan.seed,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "sample_rate": 16000,
        "totals": {
            "utterances": n_utts,
            "hours": _hours(total_s),
            "planned": len(plan.utterances),
            "skipped": report.to_dict(),
        },
        "manifests": {name: manifest_stats(entries) for name, entries in manifests.items()},
        "voices": voice_stats(manifests),
        "vocabulary": {
            "top_n": preset.top_n,
            "words_per_sentence": [preset.min_words, preset.max_words],
            "top_words": plan.vocabulary[:30],
            "train_sentences": n_train_sentences,
            "measured_chars_per_second_train": round(cps, 2) if cps else None,
            "measurements": [m.to_dict() for m in measurements],
            "note": "unseen-word rates use this preset's dev/test/train sentence counts; est_mean_duration_s "
            "= mean characters / measured characters per second of the train audio",
        },
        "text_pool": {
            "english_clean_unique": len(plan.english_pool),
            "by_source": plan.pool_stats,
            "skipped_languages": plan.skipped_languages,
        },
        "generation": {
            "workers": workers,
            "cpu_count": os.cpu_count(),
            "plan_s": round(tool_times.get("plan_s", 0.0), 1),
            "synth_s": round(tool_times.get("synth_s", 0.0), 1),
            "wall_s": None,  # filled in by the caller once everything is written
        },
        "tools": _versions(),
        "design": DESIGN_NOTES,
    }


def _md_table(header: Sequence[str], rows: Sequence[Sequence]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join("" if c is None else str(c) for c in r) + " |" for r in rows]
    return out + [""]


def card_markdown(card: Mapping) -> str:
    t = card["totals"]
    lines = [
        f"# {card['name']}",
        "",
        f"{t['utterances']} utterances, {t['hours']} h of 16 kHz mono speech; {t['skipped']['skipped']} "
        f"skipped of {t['planned']} planned. Seed {card['seed']}, generated in "
        f"{card['generation']['wall_s']} s on {card['generation']['workers']} workers "
        f"({card['created_utc']}).",
        "",
        "## Manifests",
        "",
    ]
    rows = []
    for name, m in card["manifests"].items():
        d = m["duration_s"]
        rows.append(
            [
                name,
                m["utterances"],
                m["hours"],
                m["sentences"],
                d.get("mean"),
                d.get("min"),
                d.get("max"),
                ", ".join(f"{k} {v}" for k, v in m["languages"].items()),
            ]
        )
    lines += _md_table(["manifest", "utts", "hours", "sentences", "mean s", "min s", "max s", "langs"], rows)
    lines += ["## Voices", ""]
    per_split = {name: m["voices"] for name, m in card["manifests"].items()}
    rows = [
        [v, s["utterances"], s["hours"], s["chars_per_second"]]
        + [per_split[n].get(v, {}).get("utterances", 0) for n in per_split]
        for v, s in card["voices"].items()
    ]
    lines += _md_table(["voice", "utts", "hours", "chars/s"] + [f"{n} utts" for n in per_split], rows)
    voc = card["vocabulary"]
    lines += [
        "## Vocabulary restriction",
        "",
        f"Chosen top-N: **{voc['top_n']}** words; sentences of {voc['words_per_sentence'][0]}-"
        f"{voc['words_per_sentence'][1]} words, all inside the top-N. Measured speaking rate of the train "
        f"audio: {voc['measured_chars_per_second_train']} characters/s.",
        "",
    ]

    def pct(x: float) -> str:
        return f"{100 * x:.2f}%"

    rows = [
        [
            m["top_n"],
            m["usable_sentences"],
            f"{m['mean_words']:.2f}",
            f"{m['mean_chars']:.1f}",
            "" if m["est_mean_duration_s"] is None else f"{m['est_mean_duration_s']:.2f}",
            m["train_sentences"],
            pct(m["heldout_oov_token_rate"]),
            pct(m["heldout_oov_type_rate"]),
            m["vocab_seen_in_train"],
            m["vocab_seen_5x_in_train"],
            ", ".join(f"{k} {100 * v:.0f}%" for k, v in m["source_mix"].items()),
        ]
        for m in voc["measurements"]
    ]
    header = ["N", "usable sents", "words/sent", "chars/sent", "est. s/utt", "train sents"]
    header += ["dev+test words unseen in train", "unseen types", "vocab in train", "vocab >=5x in train"]
    lines += _md_table(header + ["source mix"], rows)
    lines += [voc["note"], ""]
    skipped = t["skipped"]
    lines += ["## Skipped utterances", ""]
    if skipped["skipped"]:
        lines += [f"- {r}: {n}" for r, n in skipped["by_reason"].items()]
        lines += [f"  - e.g. {m}" for msgs in skipped["examples"].values() for m in msgs[:2]]
    else:
        lines.append("None.")
    if card["text_pool"]["skipped_languages"]:
        lines += ["", "Languages skipped (source not installed):"]
        lines += [f"- {k}: {v}" for k, v in card["text_pool"]["skipped_languages"].items()]
    lines += ["", "## Design", ""] + [f"- {n}" for n in card["design"]]
    tools = card["tools"]
    lines += ["", "## Tools", ""] + [f"- {k}: {v}" for k, v in tools["engines"].items()]
    lines += [f"- Debian {k}: {v}" for k, v in tools["debian_packages"].items()]
    lines += [
        f"- Python {tools['python']}; " + ", ".join(f"{k} {v}" for k, v in tools["python_packages"].items())
    ]
    gen = card["generation"]
    lines += [
        "",
        f"Timing: plan {gen['plan_s']} s, synthesis {gen['synth_s']} s, total {gen['wall_s']} s.",
        "",
    ]
    return "\n".join(lines)


def plot_durations(manifests: Mapping[str, Sequence[Mapping]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display; must precede pyplot
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    all_d = [e["duration"] for entries in manifests.values() for e in entries]
    top = max(all_d, default=1.0)
    bins = [i * 0.25 for i in range(int(top / 0.25) + 2)]
    for name, entries in manifests.items():
        if entries:  # each manifest as shares of its own utterances, so the small test sets stay visible
            ax.hist(
                [e["duration"] for e in entries],
                bins=bins,
                weights=[1.0 / len(entries)] * len(entries),
                histtype="step",
                label=f"{name} ({len(entries)})",
            )
    ax.set_xlabel("duration (s)")
    ax.set_ylabel("share of the manifest's utterances")
    ax.set_title("Utterance durations per manifest")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_card(
    out_dir: Path, card: Mapping, manifests: Mapping[str, Sequence[Mapping]], vocab: Sequence[str]
) -> None:
    """Write the card files; card.json goes last, so its presence means the corpus is complete."""
    (out_dir / "vocab.txt").write_text("".join(w + "\n" for w in vocab), encoding="utf-8")
    plot_durations(manifests, out_dir / "duration_hist.png")
    (out_dir / "card.md").write_text(card_markdown(card), encoding="utf-8")
    (out_dir / "card.json").write_text(
        json.dumps(card, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
