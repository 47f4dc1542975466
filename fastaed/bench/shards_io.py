"""The real-disk half of ``fastaed bench shards``: loose files against tar shards, and the samplers fed from
them (ours on NeMo tars and on Shar; Lhotse's ``DynamicBucketingSampler`` on the same Shar when installed).

Every timed pass starts with the files it reads evicted from the page cache (``posix_fadvise DONTNEED``,
no root needed for clean pages), so the numbers are disk reads, not memory copies; ``cold`` in the result
says whether eviction was available. One process, this machine's disk.
"""

from __future__ import annotations

import json
import os
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch

from fastaed.bench.fixtures import SENTENCES, small_tokenizer
from fastaed.data.audio import load_audio
from fastaed.data.dataset import AEDDataset
from fastaed.data.index import build_index
from fastaed.data.manifest import ManifestSpec
from fastaed.data.shard_sources import open_shard_source
from fastaed.data.shards import ShardDataset, write_shards
from fastaed.sampling import BucketingSampler, estimate_bins
from fastaed.sampling.streaming import StreamingBucketingSampler, StreamingConfig
from fastaed.util.tables import format_table

SAMPLE_RATE = 16_000
BUDGET_S = 60.0  # padded seconds per batch of the loader passes (small files: ~30 per batch)


def _evict(paths) -> bool:
    if not hasattr(os, "posix_fadvise"):
        return False
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    return True


def _corpus(root: Path, n: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(n):
        seconds = float(np.round(rng.uniform(1.0, 4.0), 2))
        wave = (0.1 * rng.standard_normal(int(seconds * SAMPLE_RATE))).astype(np.float32)
        path = root / "audio" / f"{i:05d}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, wave, SAMPLE_RATE, subtype="PCM_16")
        text = SENTENCES[i % len(SENTENCES)]
        lines.append(json.dumps({"audio_filepath": f"audio/{i:05d}.wav", "duration": seconds, "text": text}))
    manifest = root / "train.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def _timed(fn, files) -> tuple[float, Any]:
    _evict(files)
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def _rate(n: int, mb: float, seconds: float) -> dict[str, float]:
    return {"files_per_s": n / seconds, "mb_per_s": mb / seconds, "wall_s": seconds}


def _loader_pass(
    dataset, batch_sampler, collate, audio_s: float, files, workers: int = 2
) -> dict[str, float]:
    def go():
        loader = torch.utils.data.DataLoader(
            dataset, batch_sampler=batch_sampler, collate_fn=collate, num_workers=workers
        )
        return sum(1 for _ in loader)

    wall, batches = _timed(go, files)
    return {
        "batches": batches,
        "batches_per_s": batches / wall,
        "audio_s_per_s": audio_s / wall,
        "wall_s": wall,
    }


def real_tar_reads(config) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(dir=config.workdir) as tmp:
        root = Path(tmp)
        manifest = _corpus(root / "loose", config.real_files, config.seed)
        tok = small_tokenizer(root / "tok")
        wavs = sorted(str(p) for p in (root / "loose" / "audio").glob("*.wav"))
        mb = sum(os.path.getsize(p) for p in wavs) / 2**20
        written = write_shards([manifest], root / "tars", items_per_shard=100, seed=config.seed)
        tars = sorted(str(p) for p in (root / "tars").glob("*.tar"))
        shards = open_shard_source(str(root / "tars"), tok)
        items = [x for s in shards for x in s]
        order = np.random.default_rng(config.seed).permutation(len(items)).tolist()
        ds = ShardDataset(tok, on_bad_input="error")
        cold = _evict(wavs)

        res: dict[str, Any] = {"files": len(wavs), "mb": mb, "audio_s": written.seconds, "cold": cold}
        res["loose_files"] = _rate(
            len(wavs), mb, _timed(lambda: [load_audio(wavs[i]) for i in order], wavs)[0]
        )
        res["tar_member_seek"] = _rate(len(items), mb, _timed(lambda: [ds[items[i]] for i in order], tars)[0])

        def stream():
            for t in tars:
                with tarfile.open(t, "r:") as tf:
                    for m in tf:
                        sf.read(tf.extractfile(m), dtype="float32")

        res["tar_sequential"] = _rate(len(items), mb, _timed(stream, tars)[0])

        # The samplers with audio loading, through a 2-worker DataLoader.
        cfg = StreamingConfig(buffer_size=400, seed=config.seed)
        ours = StreamingBucketingSampler(shards, bins=_bins(items), max_duration=BUDGET_S, config=cfg)
        res["ours_on_tars"] = _loader_pass(ds, ours, ds.collate, written.seconds, tars)
        index = build_index([ManifestSpec(manifest)], tok, use_cache=False, progress=False)
        loose_ds = AEDDataset(index, tok)
        idx_sampler = BucketingSampler(
            index.durations, index.out_lengths, bins=_bins(items), max_duration=BUDGET_S, seed=config.seed
        )
        res["index_on_loose"] = _loader_pass(loose_ds, idx_sampler, loose_ds.collate, written.seconds, wavs)
        res["lhotse_shar"] = _lhotse(root, manifest, items, tok, ds, written.seconds, config.seed)
        return res


def _bins(items):
    d = np.array([x["duration"] for x in items])
    u = np.array([x["out_length"] for x in items])
    return estimate_bins(d, u, 8, 1)


def _lhotse(root: Path, manifest: Path, items, tok, ds, audio_s: float, seed: int) -> dict[str, Any] | None:
    """Lhotse's DynamicBucketingSampler over a Shar copy (audio read while iterating, as Lhotse does),
    and our sampler on the same Shar; None without lhotse."""
    try:
        from lhotse import CutSet, Recording, SupervisionSegment
        from lhotse.dataset import DynamicBucketingSampler
    except ImportError:
        return None
    import lhotse

    cuts = []
    for line in manifest.read_text().splitlines():
        e = json.loads(line)
        rec = Recording.from_file(root / "loose" / e["audio_filepath"])
        cut = rec.to_cut()
        cut.supervisions = [
            SupervisionSegment(f"s-{rec.id}", rec.id, 0.0, rec.duration, text=e["text"], language="en")
        ]
        cuts.append(cut)
    shar = root / "shar"
    shar.mkdir()
    CutSet.from_cuts(cuts).to_shar(shar, fields={"recording": "wav"}, shard_size=100)
    files = sorted(str(p) for p in shar.iterdir())

    def lhotse_pass() -> int:
        sampler = DynamicBucketingSampler(
            CutSet.from_shar(in_dir=shar), max_duration=BUDGET_S, num_buckets=8, shuffle=True, seed=seed,
            buffer_size=400,
        )  # fmt: skip
        n = 0
        for batch in sampler:
            for cut in batch:
                cut.load_audio()
            n += 1
        return n

    wall, batches = _timed(lhotse_pass, files)
    shar_shards = open_shard_source(str(shar), tok)
    cfg = StreamingConfig(buffer_size=400, seed=seed)
    ours = StreamingBucketingSampler(shar_shards, bins=_bins(items), max_duration=BUDGET_S, config=cfg)
    lhotse_res = {"batches": batches, "batches_per_s": batches / wall, "audio_s_per_s": audio_s / wall}
    return {
        "lhotse_version": lhotse.__version__,
        "lhotse_dynamic_bucketing_one_process": lhotse_res,
        "ours_on_shar": _loader_pass(ds, ours, ds.collate, audio_s, files),
        "ours_on_shar_one_process": _loader_pass(ds, ours, ds.collate, audio_s, files, workers=0),
    }


def print_real(r: dict[str, Any]) -> None:
    print(
        f"\nreal files on this disk: {r['files']} wavs, {r['mb']:.0f} MB, {r['audio_s'] / 60:.1f} min audio; "
        f"page cache evicted before each pass: {r['cold']}"
    )
    rows = [
        [name, f"{r[key]['files_per_s']:.0f}", f"{r[key]['mb_per_s']:.0f}"]
        for name, key in (
            ("loose files, load_audio, random order", "loose_files"),
            ("tar members by seek (trainer path), random order", "tar_member_seek"),
            ("tar members, one sequential stream", "tar_sequential"),
        )
    ]
    print(format_table(["read", "files/s", "MB/s"], rows))
    rows = [
        ["ours, NeMo tars, 2 workers", r["ours_on_tars"]],
        ["index sampler, loose files, 2 workers", r["index_on_loose"]],
    ]
    if r["lhotse_shar"] is not None:
        lh = r["lhotse_shar"]
        rows += [
            ["ours, Shar, 2 workers", lh["ours_on_shar"]],
            ["ours, Shar, 1 process", lh["ours_on_shar_one_process"]],
            [
                f"Lhotse {lh['lhotse_version']} DynamicBucketing, Shar, 1 process",
                lh["lhotse_dynamic_bucketing_one_process"],
            ],
        ]
    table = [
        [name, x["batches"], f"{x['batches_per_s']:.1f}", f"{x['audio_s_per_s']:.0f}"] for name, x in rows
    ]
    print(format_table(["sampler + audio loading", "batches", "batches/s", "audio s/s"], table))
