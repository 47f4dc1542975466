"""``data.train_shards`` entries → shards: which format a folder or pattern holds (``shards.py``: NeMo tarred,
``shar.py``: Lhotse Shar)."""

from __future__ import annotations

import re
from pathlib import Path

from fastaed.data import shar
from fastaed.data.errors import BadInputReport, OnBadInput
from fastaed.data.shards import SHARD_INDEX_FILE, TAR_NAME, TarShard, open_nemo_shards, read_index
from fastaed.data.tokenizer import Tokenizer


def open_shard_source(
    spec: str,
    tokenizer: Tokenizer,
    *,
    on_bad_input: OnBadInput = "error",
    report: BadInputReport | None = None,
) -> list[TarShard]:
    """Shards of one ``data.train_shards`` entry:

    - ``DIR`` with ``shard_index.json`` (``fastaed data shard``), or ``manifest_N.json`` + ``audio_N.tar``;
    - ``DIR`` with Lhotse Shar ``cuts.NNNNNN.jsonl.gz`` + ``recording.NNNNNN.tar``;
    - ``MANIFESTS::TARS``: NeMo brace patterns (``manifest__OP_0..63_CL_.json::audio__OP_0..63_CL_.tar``).
    """
    kw = {"on_bad_input": on_bad_input, "report": report}
    if "::" in spec:
        manifests, _, tars = spec.partition("::")
        return open_nemo_shards(manifests, tars, tokenizer, **kw)
    root = Path(spec)
    if not root.is_dir():
        raise FileNotFoundError(f"shard source {spec}: not a directory, nor MANIFESTS::TARS patterns")
    index = read_index(root)
    if index is not None:
        ms = [str(root / s["manifest"]) for s in index["shards"]]
        return open_nemo_shards(ms, [str(root / s["tar"]) for s in index["shards"]], tokenizer, **kw)
    if any(root.glob("cuts.*.jsonl*")):
        return shar.open_shar_shards(root, tokenizer, **kw)
    named = ((re.fullmatch(r"manifest_(\d+)\.json", p.name), p) for p in root.glob("manifest_*.json"))
    numbered = sorted((int(m.group(1)), p) for m, p in named if m)
    if not numbered:
        raise FileNotFoundError(
            f"shard source {spec}: no {SHARD_INDEX_FILE}, manifest_N.json + audio_N.tar, or cuts.N.jsonl.gz"
        )
    ms = [str(p) for _, p in numbered]
    return open_nemo_shards(ms, [str(root / TAR_NAME.format(n)) for n, _ in numbered], tokenizer, **kw)
