"""Read a TensorFlow (v1/v2 "tensor bundle") checkpoint with numpy alone, no TensorFlow.

A checkpoint `PREFIX` is two files: `PREFIX.index`, a LevelDB-style sorted table mapping each
variable name to a `BundleEntryProto` (dtype, shape, byte offset and size in the data file), and
`PREFIX.data-00000-of-00001`, the raw little-endian tensor bytes back to back. This module parses
just enough of both formats (table blocks with prefix-compressed keys, a handful of protobuf
fields) to return every variable as a numpy array, so `python -m training.build_musicnn` needs only
torch and numpy. `tests/test_musicnn.py` and the build check the result against the network's
outputs recorded with TensorFlow itself.

Format references: LevelDB `table_format.md`; TensorFlow `tensor_bundle.proto` and
`tensor_shape.proto`.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

TABLE_MAGIC = 0xDB4775248B80FB57  # last 8 bytes of every LevelDB table
FOOTER_BYTES = 48  # two block handles (padded to 40 bytes) + the magic
BLOCK_TRAILER_BYTES = 5  # compression type (1 byte) + crc32c (4 bytes) after each block
# TensorFlow DataType enum -> numpy dtype, for the types a model checkpoint holds
DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 9: np.int64, 10: np.bool_, 19: np.float16}


class CheckpointFormatError(ValueError):
    """The files are not a tensor-bundle checkpoint this reader understands."""


def read_tf_checkpoint(prefix: str | Path) -> dict[str, np.ndarray]:
    """Every variable of the checkpoint at `prefix`, by its TensorFlow name.

    Args:
        prefix: the checkpoint prefix, e.g. `.../MTT_musicnn/` for files `.../MTT_musicnn/.index`
            and `.../MTT_musicnn/.data-00000-of-00001`.

    Returns:
        name -> array with the variable's dtype and shape (TensorFlow layout, e.g. conv kernels
        `(kh, kw, in, out)`).

    Raises:
        CheckpointFormatError: a file is truncated, compressed, sharded or of an unknown dtype.
    """
    prefix = str(prefix)
    index = Path(prefix + ".index").read_bytes()
    data = Path(prefix + ".data-00000-of-00001").read_bytes()
    variables = {}
    for name, value in _table_entries(index):
        if not name:  # the empty key holds the BundleHeaderProto (endianness, version)
            continue
        entry = _parse_entry(value, name)
        if entry["shard_id"] != 0:
            raise CheckpointFormatError(f"{name}: sharded checkpoints are not supported")
        offset, size = entry["offset"], entry["size"]
        if offset + size > len(data):
            raise CheckpointFormatError(f"{name}: data file is truncated")
        array = np.frombuffer(data, dtype=entry["dtype"], count=size // np.dtype(entry["dtype"]).itemsize,
                              offset=offset)
        variables[name] = array.reshape(entry["shape"]).copy()
    return variables


def _table_entries(table: bytes) -> list[tuple[str, bytes]]:
    """All (key, value) pairs of a LevelDB table, in key order."""
    if len(table) < FOOTER_BYTES or struct.unpack("<Q", table[-8:])[0] != TABLE_MAGIC:
        raise CheckpointFormatError("index file is not a LevelDB table (bad magic)")
    footer = table[-FOOTER_BYTES:]
    _, pos = _varint(footer, 0)  # metaindex handle (unused: no filters in a bundle index)
    _, pos = _varint(footer, pos)
    index_offset, pos = _varint(footer, pos)
    index_size, _ = _varint(footer, pos)
    entries = []
    for _, handle in _block_entries(_block(table, index_offset, index_size)):
        offset, pos = _varint(handle, 0)
        size, _ = _varint(handle, pos)
        entries.extend((key.decode("utf-8"), value) for key, value in _block_entries(_block(table, offset, size)))
    return entries


def _block(table: bytes, offset: int, size: int) -> bytes:
    if offset + size + BLOCK_TRAILER_BYTES > len(table):
        raise CheckpointFormatError("index file is truncated")
    if table[offset + size] != 0:
        raise CheckpointFormatError("compressed index blocks are not supported")
    return table[offset:offset + size]


def _block_entries(block: bytes) -> list[tuple[bytes, bytes]]:
    """Decode one block: entries share a prefix with the previous key, then a restart array."""
    num_restarts = struct.unpack("<I", block[-4:])[0]
    end = len(block) - 4 - 4 * num_restarts
    entries, key, pos = [], b"", 0
    while pos < end:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        value_len, pos = _varint(block, pos)
        key = key[:shared] + block[pos:pos + unshared]
        pos += unshared
        entries.append((key, block[pos:pos + value_len]))
        pos += value_len
    return entries


def _parse_entry(message: bytes, name: str) -> dict:
    """The fields of a BundleEntryProto we need: dtype, shape, shard_id, offset, size."""
    fields = _proto_fields(message)
    if 7 in fields:
        raise CheckpointFormatError(f"{name}: sliced variables are not supported")
    dtype_code = fields.get(1, [1])[0]
    if dtype_code not in DTYPES:
        raise CheckpointFormatError(f"{name}: unsupported dtype code {dtype_code}")
    shape = []
    for shape_message in fields.get(2, []):
        for dim in _proto_fields(shape_message).get(2, []):
            shape.append(_proto_fields(dim).get(1, [0])[0])
    return {"dtype": DTYPES[dtype_code], "shape": tuple(shape), "shard_id": fields.get(3, [0])[0],
            "offset": fields.get(4, [0])[0], "size": fields.get(5, [0])[0]}


def _proto_fields(message: bytes) -> dict[int, list]:
    """Field number -> values (ints for varint/fixed fields, bytes for length-delimited ones)."""
    fields: dict[int, list] = {}
    pos = 0
    while pos < len(message):
        tag, pos = _varint(message, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(message, pos)
        elif wire == 1:
            value, pos = struct.unpack("<Q", message[pos:pos + 8])[0], pos + 8
        elif wire == 2:
            length, pos = _varint(message, pos)
            value, pos = message[pos:pos + length], pos + length
        elif wire == 5:
            value, pos = struct.unpack("<I", message[pos:pos + 4])[0], pos + 4
        else:
            raise CheckpointFormatError(f"unsupported protobuf wire type {wire}")
        fields.setdefault(number, []).append(value)
    return fields


def _varint(buffer: bytes, pos: int) -> tuple[int, int]:
    """A base-128 varint at `pos`: (value, position after it)."""
    value, shift = 0, 0
    while True:
        if pos >= len(buffer):
            raise CheckpointFormatError("truncated varint")
        byte = buffer[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
