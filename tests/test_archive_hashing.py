"""The archive checksum computed on a helper thread is the plain SHA-256 of the stream."""

from __future__ import annotations

import hashlib
import os
import threading

import pytest

from cases.pipeline import _BackgroundSHA256


def hashers_alive() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "archive-sha256" and t.is_alive()]


def test_digest_equals_hashlib_over_many_chunks_and_a_reused_buffer() -> None:
    chunks = [os.urandom(n) for n in (1, 4096, 1 << 20, 12345, 1 << 20, 7, 300_000) * 3]
    background, reused = _BackgroundSHA256(), bytearray(1 << 20)
    for chunk in chunks:
        view = memoryview(reused)[: len(chunk)]
        view[:] = chunk
        background.update(view)  # the caller overwrites the buffer right after
    assert background.hexdigest() == hashlib.sha256(b"".join(chunks)).hexdigest()
    assert hashers_alive() == []


def test_empty_stream() -> None:
    assert _BackgroundSHA256().hexdigest() == hashlib.sha256(b"").hexdigest()


def test_a_one_chunk_archive_needs_no_thread() -> None:
    background = _BackgroundSHA256()
    background.update(b"a small archive")
    assert hashers_alive() == []
    assert background.hexdigest() == hashlib.sha256(b"a small archive").hexdigest()


def test_closing_after_a_failed_download_ends_the_thread_and_freezes_the_digest() -> None:
    background = _BackgroundSHA256()
    background.update(b"half ")
    background.update(b"an archive")  # the second chunk starts the thread
    assert hashers_alive() != []
    background.close()  # what _HashingSink.__exit__ does when the download raises
    assert hashers_alive() == []
    with pytest.raises(RuntimeError, match="already final"):
        background.update(b"more")
    assert background.hexdigest() == hashlib.sha256(b"half an archive").hexdigest()
