"""Reading IDX files (the MNIST format), gzip-compressed or raw, refusing anything malformed.

Layout: a 4-byte big-endian magic 0x00 0x00 <type code> <ndim>, then ndim big-endian uint32
sizes, then the values in row-major order (big-endian for multi-byte types). MNIST labels have
magic 2049 (0x00000801: uint8, 1 dim), images 2051 (0x00000803: uint8, 3 dims).
"""
import gzip
import math
import os

import numpy as np

# IDX type code -> big-endian dtype (as torchvision's SN3 map)
TYPE_CODES = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"),
              0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


class IDXError(ValueError):
    """A file that is not a well-formed IDX file; the message names the file and the problem."""


def read_bytes(path):
    """The payload of `path`, decompressed if it is gzip (recognised by its magic, not its name)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError) as err:
            raise IDXError(f"{path}: corrupt gzip data ({err})") from None
    return raw


def parse_idx(payload, source="<bytes>", expect_ndim=None):
    """The array held by an IDX payload (native byte order), checking the header against the size."""
    if len(payload) < 4:
        raise IDXError(f"{source}: too short for an IDX header ({len(payload)} bytes)")
    zero, code, ndim = int.from_bytes(payload[:2], "big"), payload[2], payload[3]
    magic = int.from_bytes(payload[:4], "big")
    if zero != 0 or code not in TYPE_CODES or ndim == 0:
        raise IDXError(f"{source}: wrong magic number {magic} (0x{magic:08x}); expected an IDX file "
                       "such as 2049 (labels) or 2051 (images)")
    if expect_ndim is not None and ndim != expect_ndim:
        expected = 0x800 + expect_ndim
        raise IDXError(f"{source}: wrong magic number {magic}: expected {expected} "
                       f"({expect_ndim}-D {'labels' if expect_ndim == 1 else 'images'})")
    header = 4 + 4 * ndim
    if len(payload) < header:
        raise IDXError(f"{source}: truncated header ({len(payload)} bytes, need {header})")
    shape = tuple(int.from_bytes(payload[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = TYPE_CODES[code]
    expected = header + math.prod(shape) * dtype.itemsize   # Python ints: no overflow
    if len(payload) != expected:
        problem = "truncated" if len(payload) < expected else "has trailing bytes"
        raise IDXError(f"{source}: {problem}: the header says {shape} values of {dtype.name} "
                       f"({expected} bytes), the file has {len(payload)} bytes")
    data = np.frombuffer(payload, dtype=dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def read_idx(path, expect_ndim=None):
    """Read an IDX file (gzip or raw) into a NumPy array."""
    return parse_idx(read_bytes(path), os.fspath(path), expect_ndim)
