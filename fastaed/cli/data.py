"""`fastaed data ...`: data preparation and checks. Each action is a sub-subcommand of `data`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fastaed.data.errors import ON_BAD_INPUT_CHOICES, BadInputReport


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="prepare and check data")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION")
    dsub.required = True

    rc = dsub.add_parser(
        "real-check",
        help="real transcribed recordings (pocketsphinx sdist, Asterisk prompts) as test manifests",
        description="pocketsphinx: download (once, cached in OUT/cache) the pocketsphinx 5.1.1 source "
        "archive and write its transcribed recordings as 16 kHz wavs and OUT/real_check.jsonl (held out "
        "whole). asterisk, asterisk-es, asterisk-fr: decode the Debian Asterisk prompts in English, Spanish "
        "and French (G.722, ffmpeg) to 16 kHz wavs and write OUT/asterisk.jsonl, OUT/asterisk_es.jsonl and "
        "OUT/asterisk_fr.jsonl, each with its fixed halves X.heldout.jsonl (scored on) and X.adapt.jsonl "
        "(free for adaptation); silence, non-speech and untranscribed entries are counted in the report.",
    )
    rc.add_argument(
        "--out",
        type=Path,
        required=True,
        help="output folder: new or empty, or an earlier real-check folder (added to; anything else is "
        "refused)",
    )
    rc.add_argument("--archive", type=Path, default=None, help="use this pocketsphinx-5.1.1.tar.gz")
    rc.add_argument("--index-url", default=None, help="simple index URL (default: $PIP_INDEX_URL or PyPI)")
    rc.add_argument("--timeout", type=float, default=60.0, help="network timeout in seconds")
    rc.add_argument(
        "--sets", default=None,
        help=f"comma-separated: {', '.join(REAL_CHECK_SETS)} (default all; an Asterisk set whose Debian "
        "packages are missing is then left out with a note, and is an error when asked for by name)",
    )  # fmt: skip
    rc.add_argument("--workers", type=int, default=2, help="parallel ffmpeg decoders (asterisk)")
    rc.set_defaults(func=real_check_cmd)
    add_index_commands(dsub)
    add_shard_command(dsub)


def add_shard_command(dsub: argparse._SubParsersAction) -> None:
    p = dsub.add_parser(
        "shard",
        help="write NeMo-tarred shards (manifest_N.json + audio_N.tar + shard index) from manifests",
        description="Deterministic: a seeded shuffle and fixed tar headers, so the same input gives the same "
        "bytes. Train on the result with data.train_shards=[OUT].",
    )
    p.add_argument("manifests", nargs="+", help="NeMo JSONL manifests")
    p.add_argument(
        "--out",
        type=Path,
        required=True,
        help="output folder: new or empty, or earlier shards (replaced once the new ones are written; "
        "anything else is refused)",
    )
    size = p.add_mutually_exclusive_group(required=True)
    size.add_argument("--items-per-shard", type=int, default=None, help="utterances per shard")
    size.add_argument(
        "--seconds-per-shard", type=float, default=None, help="audio seconds per shard (at most)"
    )
    p.add_argument("--no-shuffle", action="store_true", help="keep the manifests' order")
    p.add_argument("--seed", type=int, default=0, help="shuffle seed")
    p.add_argument("--on-bad-input", choices=ON_BAD_INPUT_CHOICES, default="error")
    p.set_defaults(func=shard_cmd)


def shard_cmd(args: argparse.Namespace) -> int:
    from fastaed.data.shards import SHARD_INDEX_FILE, write_shards

    result = write_shards(
        args.manifests, args.out, items_per_shard=args.items_per_shard,
        seconds_per_shard=args.seconds_per_shard, shuffle=not args.no_shuffle, seed=args.seed,
        on_bad_input=args.on_bad_input,
    )  # fmt: skip
    print(
        f"wrote {result.num_shards} shards, {result.num_items:,} utterances, {result.seconds / 3600:.2f} h "
        f"to {result.out_dir} (index: {SHARD_INDEX_FILE})"
    )
    print(result.report.summary())
    return 0


# --sets name -> Asterisk language (None: the pocketsphinx clips)
REAL_CHECK_SETS: dict[str, str | None] = {
    "pocketsphinx": None, "asterisk": "en", "asterisk-es": "es", "asterisk-fr": "fr",
}  # fmt: skip


def real_check_cmd(args: argparse.Namespace) -> int:
    from fastaed.cli.errors import UsageError

    named = args.sets is not None
    sets = [s.strip() for s in (args.sets or ",".join(REAL_CHECK_SETS)).split(",") if s.strip()]
    unknown = [s for s in sets if s not in REAL_CHECK_SETS]
    if unknown or not sets:
        raise UsageError(
            f"--sets: unknown {', '.join(unknown) if unknown else 'empty list'}; expected one or more of "
            f"{', '.join(REAL_CHECK_SETS)}"
        )
    adopt_real_check_dir(args.out)
    for name in dict.fromkeys(sets):  # in the order given, each once
        if REAL_CHECK_SETS[name] is None:
            _pocketsphinx_set(args)
        else:
            _asterisk_set(args, name, REAL_CHECK_SETS[name], required=named)
    return 0


REAL_CHECK_KIND = "real-check folder"  # its output kind (fastaed.util.outputs)


def real_check_names() -> set[str]:
    """The names ``data real-check`` writes in its folder (files and folders, temporary ones included)."""
    from fastaed.data import asterisk, realcheck
    from fastaed.data.heldout import half_paths

    names = {"cache", "audio", realcheck.MANIFEST_NAME}
    for source in asterisk.LANGUAGES.values():
        manifest = Path(source.manifest_name)
        names |= {source.audio_dir, manifest.name, manifest.with_suffix(".tmp").name}  # .tmp: being written
        names |= {p.name for p in half_paths(manifest)}
    return names


def adopt_real_check_dir(out: Path) -> None:
    """Take ``out`` for the sets, which are added to it in place (each set's manifest is written last): it
    must be new, empty or a real-check folder (marked, or from before markers: only the names below)."""
    import re

    from fastaed.util.outputs import adopt_dir

    names = real_check_names()
    half_being_written = re.compile(r"\.(?P<stem>.+)\.[0-9a-f]{8}\.tmp\.jsonl")  # fastaed.util.outputs

    def allowed(name: str) -> bool:
        m = half_being_written.fullmatch(name)
        return name in names or (m is not None and f"{m.group('stem')}.jsonl" in names)

    adopt_dir(out, REAL_CHECK_KIND, "data real-check", allowed=allowed)


def _asterisk_set(args: argparse.Namespace, name: str, lang: str, required: bool) -> None:
    from fastaed.cli.errors import UsageError
    from fastaed.data.asterisk import AsteriskSourceError, missing_sources, prepare_asterisk

    if not required and (missing := missing_sources(lang=lang)):
        print(f"{name}: not built, missing {', '.join(missing)} (make apt installs them)")
        return
    try:
        result = prepare_asterisk(args.out, workers=args.workers, lang=lang)
    except AsteriskSourceError as e:
        raise UsageError(f"--sets {name}: {e}") from e
    print(f"wrote {result.manifest}: {len(result.entries)} clips, {result.seconds:.1f} s of real speech")
    _print_durations(result.entries, "category")
    halves = ((result.heldout, "held out (scored on)"), (result.adapt, "for adaptation"))
    for path, role in halves:
        entries = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        seconds = sum(e["duration"] for e in entries)
        print(f"  {path.name}: {len(entries)} clips, {seconds:.1f} s, {role}")
    if result.encoding != "utf-8":
        print(f"  transcripts read as {result.encoding} (not UTF-8)")
    if result.corrected:
        print(f"  transcript names corrected to their recording's: {len(result.corrected)}")
        print("".join(f"    {c}\n" for c in result.corrected), end="")
    print(f"  {result.report.summary()}")


def _print_durations(entries: list[dict], key: str) -> None:
    by_key: dict[str, list[float]] = {}
    for e in entries:
        by_key.setdefault(e[key], []).append(e["duration"])
    for name, durations in sorted(by_key.items()):
        print(f"  {name:10s} {len(durations):3d} clips {sum(durations):6.1f} s")


def _pocketsphinx_set(args: argparse.Namespace) -> None:
    from fastaed.data.realcheck import prepare_real_check

    # A DownloadError is printed by fastaed.cli.main, as every expected error.
    result = prepare_real_check(
        args.out, archive=args.archive, index_url=args.index_url, timeout=args.timeout
    )
    by_corpus: dict[str, list[float]] = {}
    for e in result.entries:
        by_corpus.setdefault(e["corpus"], []).append(e["duration"])
    print(f"wrote {result.manifest}: {len(result.entries)} clips, {result.seconds:.1f} s of real speech")
    for corpus, durations in by_corpus.items():
        print(f"  {corpus:10s} {len(durations):3d} clips {sum(durations):6.1f} s")
    print(f"  {result.manifest.name}: all {len(result.entries)} clips held out (scored on, never adapted on)")
    print(f"  archive: {result.archive}")
    print(f"  {result.report.summary()}")


def add_index_commands(dsub: argparse._SubParsersAction) -> None:
    p = dsub.add_parser("index", help="build (or reload) the metadata index; print a summary")
    p.add_argument("manifests", nargs="+", help="NeMo JSONL manifests (PATH or PATH:WEIGHT)")
    p.add_argument("--tokenizer", type=Path, required=True, help="tokenizer directory")
    p.add_argument(
        "--on-bad-input",
        choices=ON_BAD_INPUT_CHOICES,
        default="error",
        help="error: stop at the first bad line/file; skip: leave it out, count it, report it",
    )
    p.add_argument(
        "--validate-audio",
        action="store_true",
        help="also decode every audio file (exists, readable, finite, duration matches)",
    )
    p.add_argument("--duration-tolerance", type=float, default=0.1, help="seconds (with --validate-audio)")
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    p.add_argument("--no-cache", action="store_true", help="rebuild the index even if cached")
    p.add_argument("--json", type=Path, default=None, help="write the summary (and bad-input report) here")
    p.set_defaults(func=index_cmd)

    lf = dsub.add_parser(
        "long-file",
        help="a long recording for long-form decoding: real clips joined with pauses of known length",
        description="Joins the transcribed clips of MANIFEST (each cut to its speech) with pauses of 0.3-3 s "
        "(one in ten 5-10 s) into OUT/audio.wav (16 kHz, exactly --minutes long) and OUT/truth.json (every "
        "clip's start, end and text; the reference text). Deterministic from --seed.",
    )  # fmt: skip
    lf.add_argument("manifest", type=Path, help="NeMo JSONL of real clips (e.g. data/real/asterisk.jsonl)")
    lf.add_argument("--minutes", type=float, default=2.0)
    lf.add_argument("--seed", type=int, default=0)
    lf.add_argument("--out", type=Path, required=True, help="output folder (new, empty or an earlier one)")
    lf.set_defaults(func=long_file_cmd)

    c = dsub.add_parser(
        "from-lhotse", help="convert a Lhotse cut manifest to NeMo JSONL (needs fastaed[lhotse])"
    )
    c.add_argument("cuts", type=Path)
    c.add_argument("--out", type=Path, required=True)
    c.add_argument("--on-bad-input", choices=ON_BAD_INPUT_CHOICES, default="error")
    c.set_defaults(func=from_lhotse_cmd)


def index_cmd(args: argparse.Namespace) -> int:
    from fastaed.data.index import build_index
    from fastaed.data.manifest import ManifestSpec
    from fastaed.data.tokenizer import Tokenizer

    tok = Tokenizer.load(args.tokenizer)
    specs = [ManifestSpec.parse(m) for m in args.manifests]
    index = build_index(
        specs,
        tok,
        on_bad_input=args.on_bad_input,
        use_cache=not args.no_cache,
        num_workers=args.workers,
        progress=True,
    )
    summary = index.summary()
    summary["from_cache"] = index.from_cache
    report = index.report
    if args.validate_audio:
        from fastaed.data.validate import validate_audio

        result = validate_audio(
            index,
            on_bad_input=args.on_bad_input,
            duration_tolerance=args.duration_tolerance,
            num_workers=args.workers,
            progress=True,
        )
        report = result.report
        summary["audio_checked"] = result.checked
        summary["audio_hours_decoded"] = result.audio_seconds / 3600
        summary["bad_input"] = report.to_dict()
    print(_format_summary(summary))
    print(report.summary())
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def _format_summary(s: dict) -> str:
    lines = [
        f"{s['utterances']:,} utterances, {s['hours']:.2f} h ({'cached' if s.get('from_cache') else 'built'})"
    ]
    if s["utterances"]:
        lines.append(f"{'':14}{'min':>9}{'mean':>9}{'median':>9}{'max':>9}")
        for key, label in (
            ("duration_s", "duration (s)"),
            ("out_length", "U (tokens)"),
            ("tokens_per_s", "U / s"),
        ):
            st = s[key]
            lines.append(f"{label:14}{st['min']:9.2f}{st['mean']:9.2f}{st['p50']:9.2f}{st['max']:9.2f}")
    return "\n".join(lines)


def from_lhotse_cmd(args: argparse.Namespace) -> int:
    from fastaed.data.lhotse_io import lhotse_to_nemo

    report = BadInputReport()
    n = lhotse_to_nemo(args.cuts, args.out, on_bad_input=args.on_bad_input, report=report)
    print(f"wrote {n:,} utterances to {args.out}")
    print(report.summary())
    return 0


def long_file_cmd(args: argparse.Namespace) -> int:
    from fastaed.bench.longform_data import TRUTH_NAME, build_long_file, load_source_clips
    from fastaed.cli.errors import UsageError

    if args.minutes <= 0:
        raise UsageError(f"--minutes must be > 0, got {args.minutes}")
    try:
        clips = load_source_clips(args.manifest)
    except ValueError as e:
        raise UsageError(str(e)) from None
    audio, truth = build_long_file(clips, args.minutes, args.seed, args.out, source=str(args.manifest))
    n = len(truth["clips"])
    print(f"wrote {audio} ({args.minutes:g} min, {n} clips) and {args.out / TRUTH_NAME}")
    return 0
