"""A project's state in one SQLite database that commits as a whole.

A project's labels, its round, its pending query, its method's state, its pool's items and its
config live in ``PROJECT/project.db`` (the standard library's embedded, transactional store;
Label Studio's own default), so every command changes the project in one transaction: a crash
or a kill at any moment leaves the state before the command or the state after it, never a mix.

Schema (``PRAGMA user_version`` = :data:`SCHEMA`)::

  meta(key TEXT PRIMARY KEY, value TEXT)       JSON values: classes, config, pool, round, ...
  items(position INTEGER PRIMARY KEY, id TEXT UNIQUE, path TEXT, digest TEXT)
                                               the pool as it was last seen (digest: SHA-256)
  events(seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT, body TEXT)
                                               the label log, append-only (body: one JSON event)
  blobs(key TEXT PRIMARY KEY, value BLOB)      the method's state (``method_state``: an .npz)
"""

from __future__ import annotations

import json
import os
import sqlite3
from typing import Any, Iterable

SCHEMA = 2  # version 1 was the five files project.json, state.json, labels.jsonl, ...
DB_FILE = "project.db"

_TABLES = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE items (position INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, path TEXT NOT NULL,
                    digest TEXT NOT NULL);
CREATE TABLE events (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL,
                     body TEXT NOT NULL);
CREATE TABLE blobs (key TEXT PRIMARY KEY, value BLOB NOT NULL);
"""


def _connect(path: str) -> sqlite3.Connection:
  conn = sqlite3.connect(path, isolation_level=None, timeout=0)
  conn.execute("PRAGMA synchronous=FULL")
  return conn


class Store:
  """The open database of a project (the caller holds the project's lock)."""

  def __init__(self, project_dir: str):
    self.path = os.path.join(project_dir, DB_FILE)
    try:
      with open(self.path, "rb") as f:
        magic = f.read(16)
      if magic != b"SQLite format 3\x00":
        raise sqlite3.DatabaseError("not an SQLite database")
      self.conn = _connect(self.path)
      version = self.conn.execute("PRAGMA user_version").fetchone()[0]
      tables = {r[0] for r in self.conn.execute("SELECT name FROM sqlite_master")}
      self.conn.execute("PRAGMA quick_check").fetchone()
    except (sqlite3.DatabaseError, OSError) as e:
      raise ValueError(f"{self.path} is damaged ({e}); restore the project folder from a "
                       "backup") from None
    if version != SCHEMA:
      raise ValueError(f"{self.path}: schema version {version}, this dal_jax reads version "
                       f"{SCHEMA}; use the dal_jax that wrote it")
    if not {"meta", "items", "events", "blobs"} <= tables:
      raise ValueError(f"{self.path} lacks tables {sorted({'meta', 'items', 'events', 'blobs'} - tables)}; "
                       "restore the project folder from a backup")

  # ---- reading

  def meta(self) -> dict[str, Any]:
    out = {}
    for key, value in self.conn.execute("SELECT key, value FROM meta"):
      try:
        out[key] = json.loads(value)
      except json.JSONDecodeError:
        raise ValueError(f"{self.path}: meta {key!r} is not JSON; restore the project folder "
                         "from a backup") from None
    return out

  def items(self) -> list[tuple[str, str, str]]:
    """``(id, path, digest)`` in pool order."""
    return list(self.conn.execute("SELECT id, path, digest FROM items ORDER BY position"))

  def events(self) -> list[dict[str, Any]]:
    out = []
    for seq, body in self.conn.execute("SELECT seq, body FROM events ORDER BY seq"):
      try:
        out.append(json.loads(body))
      except json.JSONDecodeError:
        raise ValueError(f"{self.path}: label event {seq} is not JSON; restore the project "
                         "folder from a backup") from None
    return out

  def blob(self, key: str) -> bytes | None:
    row = self.conn.execute("SELECT value FROM blobs WHERE key = ?", (key,)).fetchone()
    return None if row is None else bytes(row[0])

  # ---- writing: one transaction per call

  def commit(self, *, meta: dict[str, Any] | None = None, events: Iterable[dict] = (),
             blobs: dict[str, bytes | None] | None = None,
             items: list[tuple[str, str, str]] | None = None) -> None:
    """Writes everything given in one transaction (all of it, or nothing on any error)."""
    try:
      _write(self.conn, meta=meta, events=events, blobs=blobs, items=items)
    except sqlite3.Error as e:  # a full disk, a read-only folder, a damaged file
      raise ValueError(f"{self.path}: the change could not be committed ({e}); nothing was "
                       "changed") from None

  def close(self) -> None:
    self.conn.close()


def _write(conn, *, meta=None, events=(), blobs=None, items=None) -> None:
  conn.execute("BEGIN IMMEDIATE")
  try:
    for key, value in (meta or {}).items():
      conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                   (key, json.dumps(value, sort_keys=True)))
    conn.executemany("INSERT INTO events (id, body) VALUES (?, ?)",
                     [(e["id"], json.dumps(e, sort_keys=True)) for e in events])
    for key, value in (blobs or {}).items():
      if value is None:
        conn.execute("DELETE FROM blobs WHERE key = ?", (key,))
      else:
        conn.execute("INSERT OR REPLACE INTO blobs (key, value) VALUES (?, ?)", (key, value))
    if items is not None:
      conn.execute("DELETE FROM items")
      conn.executemany("INSERT INTO items (position, id, path, digest) VALUES (?, ?, ?, ?)",
                       [(n, *item) for n, item in enumerate(items)])
    conn.execute("COMMIT")
  except BaseException:
    if conn.in_transaction:
      conn.execute("ROLLBACK")
    raise


def create(project_dir: str, *, meta: dict[str, Any], items: list[tuple[str, str, str]],
           events: list[dict[str, Any]], blobs: dict[str, bytes] | None = None) -> None:
  """Writes a new database beside the final name and renames it into place (a crash leaves no
  half-made project)."""
  final = os.path.join(project_dir, DB_FILE)
  tmp = f"{final}.tmp.{os.getpid()}"
  if os.path.exists(tmp):
    os.remove(tmp)
  try:
    conn = _connect(tmp)
    try:
      conn.executescript(_TABLES)
      conn.execute(f"PRAGMA user_version = {SCHEMA}")
      _write(conn, meta=meta, events=events, blobs=blobs, items=items)
    finally:
      conn.close()
    os.replace(tmp, final)
  except (sqlite3.Error, OSError) as e:
    if os.path.exists(tmp):
      os.remove(tmp)
    if isinstance(e, OSError):
      raise
    raise ValueError(f"{final} could not be written ({e}); nothing was created") from None
  fd = os.open(project_dir, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)
