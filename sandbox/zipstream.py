"""Zip archives written straight to a socket, with their exact size known up front.

Benchmarks need multi-gigabyte downloads with a correct Content-Length and a valid zip, without
the sandbox ever holding the archive in memory. Every member's CRC and sizes are computed
before the first byte is sent (small members are compressed in memory, the padding member is
stored and its CRC is computed by streaming once and cached), so the layout, and therefore the
total length, is fixed before streaming. Zip64 records are written when sizes or offsets need
them, as Python's ``zipfile`` and ``unzip`` expect.
"""

from __future__ import annotations

import datetime as dt
import functools
import struct
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

CHUNK_SIZE = 1024 * 1024
ZIP64_LIMIT = 0xFFFFFFFF
_STORED = 0
_DEFLATED = 8
_UTF8_FLAG = 0x0800


@dataclass(frozen=True)
class Member:
    """One archive entry: its sizes, CRC and a factory for its (compressed) payload chunks."""

    name: str
    size: int
    compressed_size: int
    crc: int
    method: int
    chunks: Callable[[], Iterator[bytes]]


def bytes_member(name: str, data: bytes) -> Member:
    """A small member, deflated in memory."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    payload = compressor.compress(data) + compressor.flush()
    return Member(
        name, len(data), len(payload), zlib.crc32(data), _DEFLATED, lambda: iter((payload,))
    )


def _zero_chunks(size: int) -> Iterator[bytes]:
    block = bytes(min(size, CHUNK_SIZE))
    remaining = size
    while remaining > 0:
        take = min(remaining, len(block))
        yield block if take == len(block) else block[:take]
        remaining -= take


@functools.lru_cache(maxsize=16)
def _zeros_crc(size: int) -> int:
    crc = 0
    for chunk in _zero_chunks(size):
        crc = zlib.crc32(chunk, crc)
    return crc


def padding_member(name: str, size: int) -> Member:
    """A stored member of ``size`` zero bytes, generated chunk by chunk when sent."""
    return Member(name, size, size, _zeros_crc(size), _STORED, lambda: _zero_chunks(size))


def _dos_datetime(when: dt.datetime) -> tuple[int, int]:
    year = max(when.year, 1980)
    dos_date = ((year - 1980) << 9) | (when.month << 5) | when.day
    dos_time = (when.hour << 11) | (when.minute << 5) | (when.second // 2)
    return dos_time, dos_date


class StreamingZip:
    """An archive whose bytes are produced lazily by iteration; ``len()`` is its exact size."""

    def __init__(
        self, members: Sequence[Member], *, when: dt.datetime, force_zip64: bool = False
    ) -> None:
        self.members = list(members)
        self._time, self._date = _dos_datetime(when)
        self._force64 = force_zip64
        self._offsets: list[int] = []
        offset = 0
        for member in self.members:
            self._offsets.append(offset)
            offset += len(self._local_header(member)) + member.compressed_size
        self._central = b"".join(
            self._central_header(member, member_offset)
            for member, member_offset in zip(self.members, self._offsets, strict=True)
        )
        self._end = self._end_records(offset, len(self._central))
        self._size = offset + len(self._central) + len(self._end)

    def __len__(self) -> int:
        return self._size

    def _big(self, value: int) -> bool:
        return self._force64 or value >= ZIP64_LIMIT

    def _member_is_64(self, member: Member) -> bool:
        return self._big(member.size) or self._big(member.compressed_size)

    def _local_header(self, member: Member) -> bytes:
        name = member.name.encode()
        zip64 = self._member_is_64(member)
        extra = struct.pack("<HHQQ", 1, 16, member.size, member.compressed_size) if zip64 else b""
        return (
            struct.pack(
                "<IHHHHHIIIHH",
                0x04034B50,
                45 if zip64 else 20,
                _UTF8_FLAG,
                member.method,
                self._time,
                self._date,
                member.crc,
                ZIP64_LIMIT if zip64 else member.compressed_size,
                ZIP64_LIMIT if zip64 else member.size,
                len(name),
                len(extra),
            )
            + name
            + extra
        )

    def _central_header(self, member: Member, offset: int) -> bytes:
        name = member.name.encode()
        fields = []
        size = member.size
        csize = member.compressed_size
        local_offset = offset
        if self._big(member.size):
            fields.append(member.size)
            size = ZIP64_LIMIT
        if self._big(member.compressed_size):
            fields.append(member.compressed_size)
            csize = ZIP64_LIMIT
        if self._big(offset):
            fields.append(offset)
            local_offset = ZIP64_LIMIT
        extra = struct.pack(f"<HH{len(fields)}Q", 1, 8 * len(fields), *fields) if fields else b""
        version = 45 if fields else 20
        return (
            struct.pack(
                "<IHHHHHHIIIHHHHHII",
                0x02014B50,
                version,
                version,
                _UTF8_FLAG,
                member.method,
                self._time,
                self._date,
                member.crc,
                csize,
                size,
                len(name),
                len(extra),
                0,
                0,
                0,
                0o100644 << 16,
                local_offset,
            )
            + name
            + extra
        )

    def _end_records(self, cd_offset: int, cd_size: int) -> bytes:
        count = len(self.members)
        zip64 = self._force64 or count >= 0xFFFF or self._big(cd_offset) or self._big(cd_size)
        records = b""
        if zip64:
            zip64_offset = cd_offset + cd_size
            records += struct.pack(
                "<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, count, count, cd_size, cd_offset
            )
            records += struct.pack("<IIQI", 0x07064B50, 0, zip64_offset, 1)
        records += struct.pack(
            "<IHHHHIIH",
            0x06054B50,
            0,
            0,
            min(count, 0xFFFF),
            min(count, 0xFFFF),
            min(cd_size, ZIP64_LIMIT),
            min(cd_offset, ZIP64_LIMIT),
            0,
        )
        return records

    def __iter__(self) -> Iterator[bytes]:
        for member in self.members:
            yield self._local_header(member)
            sent = 0
            for chunk in member.chunks():
                sent += len(chunk)
                yield chunk
            if sent != member.compressed_size:
                raise RuntimeError(f"zip member {member.name} produced {sent} bytes")
        yield self._central
        yield self._end
