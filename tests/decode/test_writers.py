"""Transcript writers: subtitle parsers read srt/vtt back, openai-whisper's writers give the same bytes, and
no output replaces a user's file.

The byte-for-byte tests run openai-whisper's own ``whisper.utils`` writers in the peer venv ``.venv-openai``
(``make openai-venv``) on the same segments, all cases in one subprocess; they skip without that venv.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
import srt
import webvtt

from fastaed.decode.segments import FileTranscript, Segment, Word
from fastaed.decode.writers import (
    FORMATS,
    SubtitleOptions,
    check_output,
    format_for,
    format_timestamp,
    render,
    unique_stems,
    wants_folder,
    write_outputs,
)
from fastaed.util.outputs import OutputExistsError

REPO = Path(__file__).resolve().parents[2]
OPENAI_PYTHON = REPO / ".venv-openai" / "bin" / "python"

# (start, end, text): times that round up to the next second, minute and hour, past one hour, "-->" in the
# text, unicode, surrounding spaces, a tab (tsv), an empty text
TRICKY = [
    (0.0, 1.5, " Hello there. "),
    (0.0005, 0.0025, " half a millisecond rounds to even"),
    (59.9995, 60.0015, " arrows --> are not cue timings"),
    (61.9996, 119.9999, " ends on the next minute"),
    (3599.999, 3599.9995, " naïve café 日本語 🎉"),
    (3725.25, 3730.0004, "\tone\ttab"),
    (7322.5, 86399.9999, " a day"),
]
EMPTY = (3730.5, 3731.0, "")


def transcript(segments: list[Segment], name: str = "talk.wav") -> FileTranscript:
    text = "".join(s.text for s in segments)
    return FileTranscript(name, 90000.0, "en", "transcribe", text, segments)


def timed(rows: list[tuple[float, float, str]]) -> FileTranscript:
    return transcript([Segment(i, a, b, t, tokens=[50364 + i]) for i, (a, b, t) in enumerate(rows)])


def worded(rows: list[list[tuple[str, float, float]]]) -> FileTranscript:
    """Segments made of words (text, start, end); a segment's times are its words' (or 0 without words)."""
    segments = []
    for i, words in enumerate(rows):
        start, end = (words[0][1], words[-1][2]) if words else (0.0, 0.0)
        text = "".join(w for w, _, _ in words)
        segments.append(Segment(i, start, end, text, words=[Word(w, a, b, 0.9) for w, a, b in words]))
    return transcript(segments)


SPOKEN = worded(
    [
        [(" The", 0.0, 0.3), (" quick", 0.3, 0.6), (" brown", 0.7, 1.0), (" fox", 1.0, 1.2)]
        + [(" jumps", 1.2, 1.6), (" over", 1.6, 1.8), (" the", 1.8, 1.9), (" lazy", 2.0, 2.4)]
        + [(" dog.", 2.4, 2.9)],
        [(" Extraordinarily", 7.0, 8.0), (" long-winded", 8.0, 8.6), (" words,", 8.6, 9.0)]
        + [(" naïve", 9.0, 9.3), (" 日本語", 9.3, 9.9), (" again.", 9.9, 10.4)],
        [(" Then", 10.4, 10.6), (" a", 10.6, 10.7), (" gap.", 14.5, 15.0)],
        [],
        [(" Past", 3599.9996, 3600.2), (" the", 3600.2, 3600.4), (" hour", 3600.4, 3661.0005)],
    ]
)
ODD_WORDS = worded(  # whitespace-only and arrow words, a first word that is not at time 0
    [
        [(" a-->b", 1.0, 1.5), ("  ", 1.5, 1.6), (" c", 1.6, 2.0)],
        [("no-space", 2.0, 2.5), (" d", 6.0, 6.5), (" e", 6.5, 7.0)],
    ]
)
OPTIONS = {
    "none": SubtitleOptions(),
    "highlight": SubtitleOptions(highlight_words=True),
    "width16": SubtitleOptions(max_line_width=16),
    "width16_count2": SubtitleOptions(max_line_width=16, max_line_count=2),
    "width12_count1": SubtitleOptions(max_line_width=12, max_line_count=1),
    "count2": SubtitleOptions(max_line_count=2),
    "words3": SubtitleOptions(max_words_per_line=3),
    "words3_width12": SubtitleOptions(max_words_per_line=3, max_line_width=12),
    "words2_highlight": SubtitleOptions(max_words_per_line=2, highlight_words=True),
    "all": SubtitleOptions(max_line_width=20, max_line_count=2, max_words_per_line=3, highlight_words=True),
}
TRANSCRIPTS = {"tricky": timed(TRICKY + [EMPTY]), "spoken": SPOKEN, "odd": ODD_WORDS}
BYTE_CASES = [(t, fmt, "none") for t in TRANSCRIPTS for fmt in ("txt", "tsv", "srt", "vtt")] + [
    (t, fmt, opt) for t in ("spoken", "odd") for fmt in ("srt", "vtt") for opt in OPTIONS if opt != "none"
]


def millis(seconds: float) -> timedelta:
    return timedelta(milliseconds=round(seconds * 1000))


def hms(td: timedelta) -> str:
    """webvtt-py's normal form of a cue time: HH:MM:SS.mmm."""
    ms = td // timedelta(milliseconds=1)
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}"


# ---- format choice and options -----------------------------------------------------------------------------


def test_an_explicit_format_wins_over_the_out_extension():
    assert format_for(Path("x.srt"), "vtt") == "vtt"
    assert [format_for(Path(f"dir/x.{f.upper()}"), None) for f in FORMATS] == list(FORMATS)


def test_an_unknown_format_or_extension_is_a_clear_error_naming_the_path():
    with pytest.raises(ValueError, match=r"--out out/talk\.mp4: .*'\.mp4'.*--format"):
        format_for(Path("out/talk.mp4"), None)
    with pytest.raises(ValueError, match=r"--out out/subs: .*no extension"):
        format_for(Path("out/subs"), None)
    with pytest.raises(ValueError, match="--format ass: not a transcript format"):
        format_for(Path("x.srt"), "ass")


def test_option_limits_below_one_are_refused_naming_the_flag():
    with pytest.raises(ValueError, match="--max-line-width 0"):
        SubtitleOptions(max_line_width=0)
    assert SubtitleOptions(max_line_count=2).ineffective() == [
        "--max-line-count has no effect without --max-line-width"
    ]
    assert not SubtitleOptions().uses_words and SubtitleOptions(highlight_words=True).uses_words


def test_timestamps_round_to_the_millisecond_half_to_even_and_carry_into_hours():
    srt_stamp = lambda s: format_timestamp(s, always_hours=True, decimal_marker=",")  # noqa: E731
    vtt_stamp = lambda s: format_timestamp(s, always_hours=False, decimal_marker=".")  # noqa: E731
    assert srt_stamp(0) == "00:00:00,000" and vtt_stamp(0) == "00:00.000"
    assert vtt_stamp(59.9995) == "01:00.000"  # 59999.5 ms: to even
    assert vtt_stamp(0.0015) == "00:00.002" and vtt_stamp(0.0025) == "00:00.002"
    assert vtt_stamp(3599.9995) == "01:00:00.000" and srt_stamp(3599.999) == "00:59:59,999"
    assert srt_stamp(100 * 3600 + 61.25) == "100:01:01,250"


def test_negative_or_nan_times_are_a_clear_error_naming_the_file():
    with pytest.raises(ValueError, match=r"talk\.wav: segment 0 start is -0\.5"):
        render(timed([(-0.5, 1.0, "x")]), "srt")
    with pytest.raises(ValueError, match=r"talk\.wav: segment 1 word 'dog' end is nan"):
        bad = worded([[(" a", 0.0, 1.0)], [(" dog", 1.0, 2.0)]])
        bad.segments[1].words[0].end = float("nan")
        render(bad, "vtt")


# ---- subtitle parsers read what we write -------------------------------------------------------------------


def test_srt_parses_back_to_every_segments_times_and_text():
    subs = list(srt.parse(render(timed(TRICKY), "srt")))
    assert [s.index for s in subs] == list(range(1, len(TRICKY) + 1))
    assert [(s.start, s.end) for s in subs] == [(millis(a), millis(b)) for a, b, _ in TRICKY]
    assert [s.content for s in subs] == [t.strip().replace("-->", "->") for _, _, t in TRICKY]
    assert subs[2].start == timedelta(minutes=1) and subs[4].end == timedelta(hours=1)


def test_vtt_parses_back_to_every_segments_times_and_text():
    captions = webvtt.from_buffer(io.StringIO(render(timed(TRICKY), "vtt"))).captions
    assert [(c.start, c.end) for c in captions] == [(hms(millis(a)), hms(millis(b))) for a, b, _ in TRICKY]
    assert captions[2].start == "00:01:00.000" and captions[6].end == "24:00:00.000"
    assert [c.text for c in captions] == [t.strip().replace("-->", "->") for _, _, t in TRICKY]


def test_word_cues_parse_in_both_formats_with_lines_and_underlines():
    options = SubtitleOptions(max_line_width=16, max_line_count=2, highlight_words=True)
    subs = list(srt.parse(render(SPOKEN, "srt", options)))
    captions = webvtt.from_buffer(io.StringIO(render(SPOKEN, "vtt", options))).captions
    assert [s.content for s in subs] == [c.raw_text for c in captions]
    assert all(s.content.count("<u>") == 1 for s in subs if "<u>" in s.content)
    assert max(len(s.content.split("\n")) for s in subs) == 2
    assert all(len(line) <= 16 for s in subs for line in re.sub("</?u>", "", s.content).split("\n"))
    assert all(a.end <= b.start for a, b in zip(subs, subs[1:]))


def test_an_empty_segment_keeps_its_cue_and_txt_line():
    doc = render(timed([TRICKY[0], EMPTY]), "srt")
    assert doc.endswith("2\n01:02:10,500 --> 01:02:11,000\n\n\n")
    assert render(timed([TRICKY[0], EMPTY]), "txt") == "Hello there.\n\n"


def test_json_is_the_verbose_json_document_and_jsonl_one_line_of_it():
    doc = json.loads(render(SPOKEN, "json"))
    assert doc == SPOKEN.to_verbose_json()
    assert [w["word"] for w in doc["words"]][:2] == [" The", " quick"]
    line = render(SPOKEN, "jsonl")
    assert line.endswith("\n") and "\n" not in line[:-1] and json.loads(line) == doc


# ---- byte for byte with openai-whisper's writers -----------------------------------------------------------

OPENAI_SCRIPT = """
import json, os, sys
import whisper.utils as wu
request = json.load(sys.stdin)
for case in request["cases"]:
    folder = os.path.join(request["out"], case["name"])
    os.makedirs(folder)
    wu.get_writer(case["fmt"], folder)(case["result"], case["name"] + ".wav", **case["kwargs"])
"""


def openai_result(t: FileTranscript) -> dict:
    """The dict openai-whisper's ``transcribe()`` returns, from our segments."""
    return {"text": t.text, "segments": [s.to_dict() for s in t.segments], "language": t.language}


def option_kwargs(options: SubtitleOptions) -> dict:
    return {k: getattr(options, k) for k in ("max_line_width", "max_line_count", "highlight_words")} | {
        "max_words_per_line": options.max_words_per_line
    }


@pytest.fixture(scope="module")
def openai_files(tmp_path_factory) -> Path:
    """Every byte case (and the json documents) written by openai-whisper's writers: a folder per case."""
    if not OPENAI_PYTHON.exists():
        pytest.skip("no openai-whisper peer venv .venv-openai (make openai-venv)")
    out = tmp_path_factory.mktemp("openai")
    cases = [
        {"name": f"{t}-{fmt}-{opt}", "fmt": fmt, "result": openai_result(TRANSCRIPTS[t])}
        | {"kwargs": option_kwargs(OPTIONS[opt])}
        for t, fmt, opt in BYTE_CASES
    ]
    cases += [
        {"name": f"{t}-json", "fmt": "json", "result": TRANSCRIPTS[t].to_verbose_json(), "kwargs": {}}
        for t in TRANSCRIPTS
    ]
    subprocess.run(
        [str(OPENAI_PYTHON), "-c", OPENAI_SCRIPT],
        input=json.dumps({"out": str(out), "cases": cases}),
        text=True,
        check=True,
        timeout=300,
    )
    return out


@pytest.mark.parametrize(("name", "fmt", "option"), BYTE_CASES, ids=["-".join(c) for c in BYTE_CASES])
def test_bytes_equal_openai_whisper_writers(openai_files, name, fmt, option):
    theirs = (openai_files / f"{name}-{fmt}-{option}" / f"{name}-{fmt}-{option}.{fmt}").read_bytes()
    ours = render(TRANSCRIPTS[name], fmt, OPTIONS[option]).encode("utf-8")
    assert ours == theirs, f"ours:\n{ours.decode()}\nopenai's:\n{theirs.decode()}"


@pytest.mark.parametrize("name", list(TRANSCRIPTS))
def test_json_holds_the_same_document_openai_whisper_writes(openai_files, name):
    theirs = json.loads((openai_files / f"{name}-json" / f"{name}-json.json").read_bytes())
    assert json.loads(render(TRANSCRIPTS[name], "json")) == theirs


# ---- output files ------------------------------------------------------------------------------------------


def test_a_single_file_is_written_and_rewritten_over_our_own_output(tmp_path):
    out = tmp_path / "subs" / "talk.srt"
    assert write_outputs([SPOKEN], out, "srt") == [out]
    assert out.read_text() == render(SPOKEN, "srt")
    options = SubtitleOptions(max_line_width=16, max_line_count=2)
    assert write_outputs([SPOKEN], out, "srt", options) == [out]
    assert out.read_text() == render(SPOKEN, "srt", options)
    assert sorted(p.name for p in out.parent.iterdir()) == [".talk.srt.fastaed-output.json", "talk.srt"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_users_file_at_out_is_refused_and_untouched(tmp_path, fmt):
    out = tmp_path / f"notes.{fmt}"
    mine = '{"text": "mine"}\n' if fmt.startswith("json") else "1\n00:00:00,000 --> 00:00:01,000\nmine\n\n"
    out.write_text(mine)
    refusal = f"--out {re.escape(str(out))}: exists and is not a {fmt} transcript fastaed wrote"
    with pytest.raises(OutputExistsError, match=refusal):
        check_output(out, fmt, as_folder=False)
    with pytest.raises(OutputExistsError):
        write_outputs([SPOKEN], out, fmt)
    assert out.read_text() == mine and sorted(p.name for p in tmp_path.iterdir()) == [out.name]


def test_our_subtitles_edited_by_the_user_are_theirs_and_refused(tmp_path):
    out = tmp_path / "talk.vtt"
    write_outputs([SPOKEN], out, "vtt")
    out.write_text(out.read_text().replace("quick", "quack"))
    with pytest.raises(OutputExistsError, match="is not a vtt transcript fastaed wrote"):
        write_outputs([SPOKEN], out, "vtt")
    assert "quack" in out.read_text()


def test_jsonl_written_by_the_earlier_transcribe_is_replaced(tmp_path):
    out = tmp_path / "hyps.jsonl"
    out.write_text(json.dumps({"audio_filepath": "a.wav", "text": "old", "score": -1.0}) + "\n")
    assert write_outputs([SPOKEN, SPOKEN], out, "jsonl") == [out]
    assert [json.loads(line)["text"] for line in out.read_text().splitlines()] == [SPOKEN.text] * 2


def test_several_inputs_go_into_a_folder_with_unique_stems(tmp_path):
    names = ("a/talk.wav", "b/talk.flac", "talk-2.wav", "x.wav")
    others = [transcript(SPOKEN.segments, name) for name in names]
    assert unique_stems(others) == ["talk", "talk-3", "talk-2", "x"]
    out = tmp_path / "subs"
    paths = write_outputs(others, out, "srt")
    assert [p.name for p in paths] == ["talk.srt", "talk-3.srt", "talk-2.srt", "x.srt"]
    assert all(p.read_text() == render(SPOKEN, "srt") for p in paths)
    assert write_outputs(others[:2], out, "vtt") == [out / "talk.vtt", out / "talk-2.vtt"]  # ours: replaced
    assert sorted(p.name for p in out.iterdir()) == [".fastaed-output.json", "talk-2.vtt", "talk.vtt"]


def test_a_folder_holding_user_files_is_refused_and_untouched(tmp_path):
    out = tmp_path / "subs"
    out.mkdir()
    (out / "movie.srt").write_text("mine")
    with pytest.raises(OutputExistsError, match="holds files fastaed did not write there"):
        write_outputs([SPOKEN, ODD_WORDS], out, "srt")
    assert [p.name for p in out.iterdir()] == ["movie.srt"] and (out / "movie.srt").read_text() == "mine"


def test_one_input_into_an_existing_folder_goes_inside_it(tmp_path):
    out = tmp_path / "subs"
    out.mkdir()
    assert wants_folder(out, "srt", 1) and not wants_folder(out, "jsonl", 3)
    assert write_outputs([SPOKEN], out, "srt") == [out / "talk.srt"]


def test_a_skipped_input_does_not_turn_the_folder_into_a_file(tmp_path):
    out = tmp_path / "subs"
    assert write_outputs([SPOKEN], out, "txt", as_folder=True) == [out / "talk.txt"]
    with pytest.raises(ValueError, match="2 transcripts need a folder"):
        write_outputs([SPOKEN, SPOKEN], tmp_path / "one.txt", "txt", as_folder=False)
