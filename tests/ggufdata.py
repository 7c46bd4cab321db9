"""Tiny well-formed GGUF files for store tests (real weights are used where llama.cpp runs)."""

from __future__ import annotations

import hashlib
import struct
from array import array


def _string(s: str) -> bytes:
    data = s.encode()
    return struct.pack("<Q", len(data)) + data


def tiny_gguf(name: str = "tiny", n_floats: int = 1024) -> bytes:
    """A GGUF v3 file with two metadata keys and one F32 tensor of ``n_floats`` values."""
    kv = _string("general.architecture") + struct.pack("<I", 8) + _string("llama")
    kv += _string("general.name") + struct.pack("<I", 8) + _string(name)
    tensor = _string("weight") + struct.pack("<I", 1) + struct.pack("<Q", n_floats) + struct.pack("<I", 0) + struct.pack("<Q", 0)
    head = b"GGUF" + struct.pack("<I", 3) + struct.pack("<Q", 1) + struct.pack("<Q", 2) + kv + tensor
    head += b"\0" * (-len(head) % 32)
    return head + array("f", range(n_floats)).tobytes()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
