"""Helpers shared by the trainer tests: a tiny corpus + tokenizer and the test config pointed at them."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from fastaed.testing import train_tiny_tokenizer, write_tiny_corpus
from fastaed.train.config import TrainConfig

REPO = Path(__file__).resolve().parents[2]
TEST_CONFIG = REPO / "configs" / "train_test.yaml"


def tiny_data(root: Path, num: int = 8) -> tuple[Path, Path]:
    """(manifest, tokenizer dir) of ``num`` short tones with sentences."""
    manifest = write_tiny_corpus(root / "data", num=num)
    tok_dir = root / "tokenizer"
    train_tiny_tokenizer(tok_dir)
    return manifest, tok_dir


def data_overrides(manifest: Path, tok_dir: Path, out_dir: Path, dev: bool = False) -> list[str]:
    items = [f"data.train_manifests=[{manifest}]", f"data.tokenizer={tok_dir}", f"runtime.out_dir={out_dir}"]
    if dev:
        items.append(f"data.dev_manifest={manifest}")
    return items


def make_config(
    manifest: Path, tok_dir: Path, out_dir: Path, *overrides: str, dev: bool = False
) -> TrainConfig:
    return TrainConfig.from_yaml(TEST_CONFIG, [*data_overrides(manifest, tok_dir, out_dir, dev), *overrides])


def subprocess_env() -> dict[str, str]:
    """The test environment (index cache included), one thread per process, the repo importable."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def train_command(manifest: Path, tok_dir: Path, out_dir: Path, *overrides: str) -> list[str]:
    """``python -m fastaed.cli.train --config configs/train_test.yaml ...`` pointed at the tiny data."""
    args = ["--config", str(TEST_CONFIG), *data_overrides(manifest, tok_dir, out_dir), *overrides]
    return [sys.executable, "-m", "fastaed.cli.train", *args]


def train_records(path: Path) -> dict[int, dict]:
    """Per-step ``train`` records of a metrics file, keyed by step (one record per step is asserted)."""
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    train = [r for r in records if r["type"] == "train"]
    steps = [r["step"] for r in train]
    assert len(steps) == len(set(steps)), f"{path}: a step is recorded twice: {steps}"
    return {r["step"]: r for r in train}
