import struct

import pytest

from localpanel.errors import GGUFError
from localpanel.weights.gguf import read_gguf

from .ggufdata import tiny_gguf


def test_reads_header_metadata_and_tensor_extent(tmp_path):
    path = tmp_path / "m.gguf"
    data = tiny_gguf("hello", n_floats=64)
    path.write_bytes(data)
    info = read_gguf(path)
    assert info.version == 3
    assert info.tensor_count == 1
    assert info.architecture == "llama"
    assert info.name == "hello"
    assert info.data_end == len(data)


def test_real_weights_parse_to_their_exact_size(real_store, registry):
    for name, arch, has_template in (("smollm2-135m", "llama", True), ("gemma3-270m", "gemma3", False)):
        spec = registry.model(name)
        info = read_gguf(real_store.path_for(spec))
        assert info.architecture == arch
        assert bool(info.chat_template) is has_template
        assert info.data_end == spec.size
        assert info.context_length >= 8192


def test_truncated_file_is_named_as_truncated(tmp_path):
    path = tmp_path / "cut.gguf"
    path.write_bytes(tiny_gguf(n_floats=256)[:-100])
    with pytest.raises(GGUFError, match=r"cut.gguf is truncated: its tensors need \d+ bytes but the file has \d+"):
        read_gguf(path)


def test_file_cut_inside_the_header(tmp_path):
    path = tmp_path / "head.gguf"
    path.write_bytes(tiny_gguf()[:30])
    with pytest.raises(GGUFError, match="truncated"):
        read_gguf(path)


def test_not_a_gguf(tmp_path):
    path = tmp_path / "page.gguf"
    path.write_bytes(b"<!doctype html><html>Not Found</html>")
    with pytest.raises(GGUFError, match=r"page.gguf is not a GGUF file \(it starts with b'<!do'"):
        read_gguf(path)


def test_garbage_lengths_are_reported_not_allocated(tmp_path):
    path = tmp_path / "bad.gguf"
    data = bytearray(tiny_gguf())
    # The first key's length field lies right after magic, version and the two counts.
    data[24:32] = struct.pack("<Q", 1 << 60)
    path.write_bytes(bytes(data))
    with pytest.raises(GGUFError, match="corrupt GGUF header"):
        read_gguf(path)


def test_unsupported_version(tmp_path):
    path = tmp_path / "v9.gguf"
    data = bytearray(tiny_gguf())
    data[4:8] = struct.pack("<I", 9)
    path.write_bytes(bytes(data))
    with pytest.raises(GGUFError, match="GGUF version 9"):
        read_gguf(path)
