"""Hostile snapshot archives for the reader's tests: a valid snapshot's members rewritten, or its
zip headers patched in place."""

import io
import struct
import zipfile

import numpy as np

# zip's local file header (30 bytes) and central directory entry (46 bytes), before their names
LOCAL = struct.Struct("<4s5H3L2H")
CENTRAL = struct.Struct("<4s6H3L5H2L")
END = struct.Struct("<4s4H2LH")  # the end of central directory record (22 bytes, no comment)
# field -> (offset in a local header, offset in a central entry, struct format)
FIELDS = {
    "flags": (6, 8, "<H"),
    "method": (8, 10, "<H"),
    "crc": (14, 16, "<L"),
    "compress_size": (18, 20, "<L"),
    "file_size": (22, 24, "<L"),
}


def members(path) -> dict[str, bytes]:
    """Every member's uncompressed bytes, in the archive's order."""
    with zipfile.ZipFile(path) as z:
        return {i.filename: z.read(i) for i in z.infolist()}


def write(path, contents: dict[str, bytes], method: int = zipfile.ZIP_STORED) -> None:
    """An archive of ``contents`` (no zip64 extras: every header holds its sizes)."""
    with zipfile.ZipFile(path, "w", method) as z:
        for name, blob in contents.items():
            z.writestr(name, blob)


def npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, array, allow_pickle=True)
    return buf.getvalue()


def npy_header(shape: tuple, descr: str = "<u8", fortran: bool = False) -> bytes:
    """A version 1.0 ``.npy`` header declaring ``shape`` of ``descr``."""
    buf = io.BytesIO()
    header = {"descr": descr, "fortran_order": fortran, "shape": shape}
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue()


def entries(raw: bytes) -> dict[str, tuple[int, int]]:
    """``{name: (local header offset, central entry offset)}`` of an archive without zip64
    end records or a comment."""
    end = END.unpack_from(raw, len(raw) - END.size)
    assert end[0] == b"PK\x05\x06"
    count, offset = end[4], end[6]
    out = {}
    for _ in range(count):
        fields = CENTRAL.unpack_from(raw, offset)
        name_len, extra_len, comment_len, local = fields[10], fields[11], fields[12], fields[-1]
        name = raw[offset + CENTRAL.size : offset + CENTRAL.size + name_len].decode()
        out[name] = (local, offset)
        offset += CENTRAL.size + name_len + extra_len + comment_len
    return out


def patch(raw: bytearray, name: str, **values) -> None:
    """Set header fields (``flags``, ``method``, ``crc``, ``compress_size``, ``file_size``) of
    member ``name`` in both its local header and its central directory entry."""
    local, central = entries(bytes(raw))[name]
    for field, value in values.items():
        at_local, at_central, fmt = FIELDS[field]
        struct.pack_into(fmt, raw, local + at_local, value)
        struct.pack_into(fmt, raw, central + at_central, value)


def data_span(raw: bytes, name: str) -> tuple[int, int]:
    """(first, end) offsets of a member's stored or compressed bytes."""
    local, central = entries(raw)[name]
    fields = LOCAL.unpack_from(raw, local)
    first = local + LOCAL.size + fields[-2] + fields[-1]
    return first, first + CENTRAL.unpack_from(raw, central)[8]
