"""`fastaed model info PRESET|CHECKPOINT`: parameter counts and shape of a model preset or checkpoint."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("model", help="inspect model presets and checkpoints")
    msub = p.add_subparsers(dest="model_command", metavar="ACTION")
    msub.required = True
    i = msub.add_parser("info", help="parameter counts (computed on the meta device: nothing is allocated)")
    i.add_argument("model", help="a preset name (see --list) or a checkpoint folder")
    i.add_argument("--vocab-size", type=int, default=None, help="override the preset's vocabulary size")
    i.add_argument("--json", action="store_true", help="print one JSON document instead of a table")
    i.set_defaults(func=info_cmd)
    ls = msub.add_parser("list", help="list the presets with their sizes")
    ls.set_defaults(func=list_cmd)


def _info(name_or_path: str, vocab_size: int | None) -> dict:
    from fastaed.formats import read_checkpoint_meta
    from fastaed.model import ModelConfig, preset_info

    if Path(name_or_path).is_dir():
        meta = read_checkpoint_meta(name_or_path)
        info = preset_info(ModelConfig.from_dict(meta["model_config"]))
        return info | {"checkpoint": name_or_path, "tokenizer_identity": meta.get("tokenizer_identity")}
    return preset_info(name_or_path, vocab_size)


def info_cmd(args: argparse.Namespace) -> int:
    info = _info(args.model, args.vocab_size)
    if args.json:
        print(json.dumps(info))
    else:
        width = max(len(k) for k in info)
        for key, value in info.items():
            print(f"{key:<{width}}  {value:,}" if isinstance(value, int) else f"{key:<{width}}  {value}")
    return 0


def list_cmd(args: argparse.Namespace) -> int:
    from fastaed.model import PRESETS, preset_info

    print(f"{'preset':<18}{'params':>15}{'encoder':>15}{'decoder':>15}  layers (enc+dec) x width")
    for name in PRESETS:
        i = preset_info(name)
        shape = f"{i['encoder_layers']}+{i['decoder_layers']} x {i['d_model']}/{i['decoder_d_model']}"
        print(f"{name:<18}{i['params']:>15,}{i['encoder_params']:>15,}{i['decoder_params']:>15,}  {shape}")
    return 0
