"""The per-row teacher response cache (SQLite): a row's answer is asked for once per model, prompt and parameters."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from pathlib import Path
from typing import Sequence

from ..prompting import extract_output
from .base import GenParams


class ResponseCache:
    """Per-row teacher responses in SQLite, keyed by everything that determines the response."""

    def __init__(self, path: str | Path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(str(path), check_same_thread=False, timeout=60)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, raw TEXT NOT NULL)")
        self._lock = threading.Lock()

    @staticmethod
    def key(
        model_key: str, template: str, demos: Sequence[tuple[str, str]], params: GenParams, input: str, chat: bool
    ) -> str:
        """`demos`: each demo's (input, target), not its id: ids hash only the input, so a corrected gold target
        must change the key of every row whose prompt showed it."""
        payload = json.dumps(
            [model_key, template, [list(d) for d in demos], params.cache_fields(), input, chat], sort_keys=True
        )
        return hashlib.sha256(payload.encode()).hexdigest()

    def get_many(self, keys: Sequence[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        with self._lock:
            for start in range(0, len(keys), 500):
                chunk = list(keys[start : start + 500])
                rows = self._conn.execute(
                    f"SELECT key, raw FROM responses WHERE key IN ({','.join('?' * len(chunk))})", chunk
                )
                found.update(rows.fetchall())
        return found

    def put_many(self, items: dict[str, str]) -> None:
        with self._lock, self._conn:
            self._conn.executemany("INSERT OR REPLACE INTO responses VALUES (?, ?)", items.items())

    def close(self) -> None:
        self._conn.close()


def cacheable(params: GenParams, fmt, input: str, raw: str) -> bool:
    """Valid outputs are always cached. Invalid ones only under greedy decoding, where asking again would
    return the same answer; when sampling, a later run gets a fresh chance at them."""
    return params.temperature == 0 or fmt.check(input, output_of(fmt, raw)).valid


def output_of(fmt, generation: str) -> str:
    """What the format's check() reads of a generation: its `extract_output`, else the first non-empty line."""
    return getattr(fmt, "extract_output", extract_output)(generation)
