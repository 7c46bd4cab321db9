"""Check that a file is a well-formed GGUF before llama.cpp sees it (it can abort the process on a bad one).

Reads the header, the metadata and the tensor table, and checks that every tensor's data lies inside the
file, which catches truncated downloads and files that are not GGUF at all.
"""

from __future__ import annotations

import functools
import mmap
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from localpanel.errors import GGUFError

MAGIC = b"GGUF"
# ggml type id -> (elements per block, bytes per block); from gguf-py's GGML_QUANT_SIZES.
GGML_BLOCKS: dict[int, tuple[int, int]] = {
    0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34), 9: (32, 36),
    10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210), 15: (256, 292),
    16: (256, 66), 17: (256, 74), 18: (256, 98), 19: (256, 50), 20: (32, 18), 21: (256, 110), 22: (256, 82),
    23: (256, 136), 24: (1, 1), 25: (1, 2), 26: (1, 4), 27: (1, 8), 28: (1, 8), 29: (256, 56), 30: (1, 2),
    34: (256, 54), 35: (256, 66), 39: (32, 17), 40: (64, 36), 41: (128, 18), 42: (64, 18),
}
# Metadata value types: id -> struct format (strings and arrays handled apart).
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
# Bounds that no real file comes near; past them the header is garbage, not a big model.
_MAX_STRING = 64 * 1024 * 1024
_MAX_COUNT = 1 << 24
# Arrays longer than this (token lists) are skipped, not kept in memory.
_KEEP_ARRAY = 64


@dataclass
class GGUFInfo:
    """What the header says about a model."""

    version: int
    tensor_count: int
    metadata: dict[str, Any] = field(default_factory=dict)
    data_end: int = 0
    parameters: int = 0  # elements in all tensors

    @property
    def architecture(self) -> str | None:
        return self.metadata.get("general.architecture")

    @property
    def name(self) -> str | None:
        return self.metadata.get("general.name")

    @property
    def context_length(self) -> int | None:
        arch = self.architecture
        value = self.metadata.get(f"{arch}.context_length") if arch else None
        return int(value) if value is not None else None

    @property
    def chat_template(self) -> str | None:
        return self.metadata.get("tokenizer.chat_template")

    @property
    def license(self) -> str | None:
        return self.metadata.get("general.license")


_U64 = struct.Struct("<Q")


class _Reader:
    """Reads fields out of a memory map: no system call per field (a 262k-token vocabulary has 262k strings)."""

    def __init__(self, buf, path: Path, size: int):
        self.buf, self.path, self.size, self.pos = buf, path, size, 0

    def take(self, n: int) -> bytes:
        if self.pos + n > self.size:
            raise GGUFError(
                f"{self.path} is truncated: its header ends at byte {self.size} while it needs {self.pos + n}; "
                "delete it and pull the model again."
            )
        data = self.buf[self.pos : self.pos + n]
        self.pos += n
        return data

    def unpack(self, fmt: str) -> Any:
        n = struct.calcsize(fmt)
        if self.pos + n > self.size:
            self.take(n)  # raises "truncated"
        value = struct.unpack_from(fmt, self.buf, self.pos)[0]
        self.pos += n
        return value

    def string(self) -> str:
        n = self.unpack("<Q")
        if n > _MAX_STRING:
            raise GGUFError(f"{self.path} has a corrupt GGUF header (a {n}-byte string); it is not a usable model.")
        return self.take(n).decode("utf-8", errors="replace")

    def value(self, vtype: int) -> Any:
        if vtype in _SCALARS:
            return self.unpack(_SCALARS[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            itype, count = self.unpack("<I"), self.unpack("<Q")
            if count > _MAX_COUNT * 16:
                raise GGUFError(f"{self.path} has a corrupt GGUF header (an array of {count} items).")
            if count <= _KEEP_ARRAY:
                return [self.value(itype) for _ in range(count)]
            if itype in _SCALARS:
                self.skip(struct.calcsize(_SCALARS[itype]) * count)
            elif itype == _STRING:  # token lists: step over, keep nothing (a tight loop: 262k strings)
                buf, pos, size, length = self.buf, self.pos, self.size, _U64.unpack_from
                for _ in range(count):
                    if pos + 8 > size:
                        pos = size + 1
                        break
                    pos += 8 + length(buf, pos)[0]
                if pos > size:
                    self.pos = size
                    self.take(pos - size)  # raises "truncated"
                self.pos = pos
            else:
                for _ in range(count):
                    self.value(itype)
            return None
        raise GGUFError(f"{self.path} has a corrupt GGUF header (unknown value type {vtype}).")

    def skip(self, n: int) -> None:
        if self.pos + n > self.size:
            self.take(n)  # raises "truncated"
        self.pos += n


def read_gguf(path: str | Path) -> GGUFInfo:
    """Parse a GGUF file's header and tensor table; raise GGUFError if it is not one or is truncated."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError as exc:
        raise GGUFError(f"cannot read {path}: {exc.strerror or exc}.") from None
    return _read_cached(path, st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _read_cached(path: Path, size: int, mtime_ns: int) -> GGUFInfo:
    if size == 0:
        raise GGUFError(f"{path} is empty (0 bytes): it is not a GGUF file.")
    try:
        with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            return _parse(_Reader(buf, path, size))
    except OSError as exc:
        raise GGUFError(f"cannot read {path}: {exc.strerror or exc}.") from None


def _parse(r: _Reader) -> GGUFInfo:
    path, size = r.path, r.size
    head = r.buf[:4]
    if head != MAGIC:
        raise GGUFError(f"{path} is not a GGUF file (it starts with {bytes(head)!r}, not b'GGUF').")
    r.pos = 4
    version = r.unpack("<I")
    if version not in (2, 3):
        raise GGUFError(f"{path} is GGUF version {version}; this llama.cpp reads versions 2 and 3.")
    tensor_count, kv_count = r.unpack("<Q"), r.unpack("<Q")
    if tensor_count > _MAX_COUNT or kv_count > _MAX_COUNT:
        raise GGUFError(f"{path} has a corrupt GGUF header ({tensor_count} tensors, {kv_count} keys).")
    info = GGUFInfo(version=version, tensor_count=tensor_count)
    for _ in range(kv_count):
        key = r.string()
        info.metadata[key] = r.value(r.unpack("<I"))
    tensors = []
    for _ in range(tensor_count):
        name = r.string()
        n_dims = r.unpack("<I")
        if n_dims > 8:
            raise GGUFError(f"{path} has a corrupt tensor table (tensor {name!r} has {n_dims} dimensions).")
        dims = [r.unpack("<Q") for _ in range(n_dims)]
        ggml_type, offset = r.unpack("<I"), r.unpack("<Q")
        tensors.append((name, dims, ggml_type, offset))
    alignment = int(info.metadata.get("general.alignment", 32) or 32)
    data_start = -(-r.pos // alignment) * alignment
    end = data_start
    parameters = 0
    for name, dims, ggml_type, offset in tensors:
        if ggml_type not in GGML_BLOCKS:
            raise GGUFError(f"{path}: tensor {name!r} has ggml type {ggml_type}, which this llama.cpp does not know.")
        per_block, block_bytes = GGML_BLOCKS[ggml_type]
        n = 1
        for d in dims:
            n *= d
        end = max(end, data_start + offset + (n // per_block) * block_bytes)
        parameters += n
    if end > size:
        raise GGUFError(
            f"{path} is truncated: its tensors need {end} bytes but the file has {size}; "
            "delete it and pull the model again."
        )
    info.data_end, info.parameters = end, parameters
    return info
