"""Helpers shared by the tests."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

import pytest


def import_optional(name: str, install: str) -> ModuleType:
    """Module ``name`` of an optional extra. Skips only when it is not installed at all; an installed module
    whose import fails (a dependency it forgot to declare) fails the test, where ``pytest.importorskip``
    would have skipped it."""
    if importlib.util.find_spec(name) is None:
        pytest.skip(f"{name} is not installed ({install})", allow_module_level=True)
    return importlib.import_module(name)


def stepped_and_forced(model, enc, enc_lens, tokens, prefill: int, kind: str = "kv"):
    """A decoder's logits two ways, for comparing them: a cache started from ``enc`` (B, T, D) / ``enc_lens``
    (B,) takes the first ``prefill`` of ``tokens`` (B, U) at once, then one token per step; teacher forcing
    runs all of them. Returns the cache and, per step, (its logits, the teacher-forced logits at the same
    position), (B, V) each."""
    cache = model.start_decoding(enc, enc_lens, tokens.shape[1], kind)
    steps = [model.decoder.step(tokens[:, :prefill], cache)]
    steps += [model.decoder.step(tokens[:, t : t + 1], cache) for t in range(prefill, tokens.shape[1])]
    full = model.decode(enc, enc_lens, tokens)  # (B, U, V), the whole prefix recomputed
    return cache, [(logits, full[:, prefill - 1 + i]) for i, logits in enumerate(steps)]
