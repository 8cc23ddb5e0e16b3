"""A local outbox for Label Studio tasks, so that a correction made in the app is never lost.

`enqueue` writes the task to an SQLite file first (committed before it returns); `flush(client)` then sends what is
pending. Items the server accepted are marked sent; the others stay pending with the reason (server down, refused
key, timeout, rejected task) for the UI: `status_line()` -> "3 queued: Label Studio at ... is unreachable (...)".

Each task is created at most once, even across crashes and timeouts: an item is identified by (project, itjner_key)
for a tweet, (project, itjner_key + hash of the entities) for a correction. Before creating anything `flush` asks the
server which tweets the project already holds and marks those items sent (a task created by a previous flush whose
answer never arrived is found here), and only then imports the rest. A correction of a tweet that is already a task
becomes an annotation of that task (mapped onto its tokens), unless an annotation with the same entities is there
already; of a tweet that is not, a new task with the correction as its annotation.
One `Outbox` object serialises its flushes with a lock; two processes flushing at once are still safe against
duplicates up to the server-side check (run one flusher per outbox file).

The file lives in the user's data folder: $ITJNER_DATA_DIR, else $XDG_DATA_HOME/itjner, else ~/.local/share/itjner,
as outbox.sqlite. No API key is ever stored in it.
"""
from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from .client import LabelStudioAuthError, LabelStudioError, LabelStudioUnavailable
from .tasks import compute_task_key, correction_key, result_to_entities

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    project INTEGER NOT NULL,
    key TEXT NOT NULL,
    task TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    last_reason TEXT,
    last_error TEXT,
    created_at REAL NOT NULL,
    sent_at REAL,
    task_id INTEGER,
    UNIQUE (project, key)
);
CREATE TABLE IF NOT EXISTS state (name TEXT PRIMARY KEY, value TEXT);
"""


def default_data_dir() -> Path:
    if os.environ.get("ITJNER_DATA_DIR"):
        return Path(os.environ["ITJNER_DATA_DIR"])
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "itjner"


@dataclass
class FlushResult:
    sent: int = 0  # tasks created by this flush
    already: int = 0  # items found on the server already (an earlier flush created them)
    failed: int = 0  # items tried and not delivered this time
    pending: int = 0  # items still queued after this flush
    error: str | None = None  # why the last failure happened

    def __str__(self) -> str:
        text = f"{self.sent} sent, {self.already} already on the server, {self.pending} queued"
        return text + (f": {self.error}" if self.error else "")


class Outbox:
    def __init__(self, data_dir: str | Path | None = None, filename: str = "outbox.sqlite"):
        self.dir = Path(data_dir) if data_dir is not None else default_data_dir()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / filename
        self._lock = threading.Lock()
        with closing(self._connect()) as con, con:
            con.executescript(SCHEMA)

    def __repr__(self) -> str:
        return f"Outbox({str(self.path)!r}, pending={self.pending_count()})"

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=30)
        con.execute("PRAGMA synchronous=FULL")
        return con

    # ------------------------------------------------------------------------------------------------- queueing
    def enqueue(self, task: dict, project: int) -> int:
        """Store a task for `project` (committed to disk before returning); returns its item id. Enqueuing the
        same task (same itjner_key) for the same project again returns the existing item."""
        data = task.get("data") or {}
        key = data.get("itjner_key") or compute_task_key(str(data.get("image_id", "")), data.get("tokens") or
                                                         [json.dumps(task, sort_keys=True)])
        if data.get("itjner_key") != key:
            task = {**task, "data": {**data, "itjner_key": key}}
        if task.get("annotations"):
            key = correction_key(key, result_to_entities(data.get("tokens") or [], task["annotations"][0]["result"]))
        blob = json.dumps(task, ensure_ascii=False)
        with closing(self._connect()) as con, con:
            con.execute("INSERT OR IGNORE INTO outbox (project, key, task, created_at) VALUES (?, ?, ?, ?)",
                        (int(project), key, blob, time.time()))
            row = con.execute("SELECT id FROM outbox WHERE project = ? AND key = ?", (int(project), key)).fetchone()
        return int(row[0])

    def status_of(self, item_id: int) -> str | None:
        """'pending' or 'sent' for an item id from `enqueue` (None if there is no such item)."""
        with closing(self._connect()) as con:
            row = con.execute("SELECT status FROM outbox WHERE id = ?", (int(item_id),)).fetchone()
        return row[0] if row else None

    def pending_count(self) -> int:
        with closing(self._connect()) as con:
            return con.execute("SELECT COUNT(*) FROM outbox WHERE status = 'pending'").fetchone()[0]

    def items(self, status: str | None = None) -> list[dict]:
        query = "SELECT id, project, key, status, attempts, last_reason, last_error, task_id FROM outbox"
        args: tuple = ()
        if status:
            query, args = query + " WHERE status = ?", (status,)
        with closing(self._connect()) as con:
            rows = con.execute(query + " ORDER BY id", args).fetchall()
        names = ("id", "project", "key", "status", "attempts", "last_reason", "last_error", "task_id")
        return [dict(zip(names, row)) for row in rows]

    @property
    def last_error(self) -> str | None:
        with closing(self._connect()) as con:
            row = con.execute("SELECT value FROM state WHERE name = 'last_error'").fetchone()
        return row[0] if row else None

    def status_line(self) -> str:
        """For the UI: "" when nothing is queued, else "N queued: <why>"."""
        n = self.pending_count()
        if n == 0:
            return ""
        return f"{n} queued: {self.last_error or 'not sent yet'}"

    # -------------------------------------------------------------------------------------------------- sending
    def _mark_sent(self, con, item_id: int, task_id: int | None) -> None:
        con.execute("UPDATE outbox SET status = 'sent', sent_at = ?, task_id = ?, attempts = attempts + 1, "
                    "last_reason = NULL, last_error = NULL WHERE id = ?", (time.time(), task_id, item_id))

    def _mark_failed(self, ids: list[int], err: LabelStudioError) -> None:
        with closing(self._connect()) as con, con:
            con.executemany("UPDATE outbox SET attempts = attempts + 1, last_reason = ?, last_error = ? WHERE id = ?",
                            [(err.reason, str(err), i) for i in ids])
            con.execute("INSERT OR REPLACE INTO state (name, value) VALUES ('last_error', ?)", (str(err),))

    def flush(self, client) -> FlushResult:
        """Send every pending item through `client` (a `labelstudio.LabelStudioClient`); see the module docstring."""
        with self._lock:
            return self._flush(client)

    def _flush(self, client) -> FlushResult:
        with closing(self._connect()) as con:
            rows = con.execute("SELECT id, project, key, task FROM outbox WHERE status = 'pending' ORDER BY id"
                               ).fetchall()
        result = FlushResult()
        by_project: dict[int, list[tuple]] = {}
        for row in rows:
            by_project.setdefault(row[1], []).append(row)
        fatal: LabelStudioError | None = None
        for project, items in by_project.items():
            if fatal is not None:  # the server is down or refuses the key: do not hammer it per project
                self._mark_failed([r[0] for r in items], fatal)
                result.failed += len(items)
                continue
            try:
                existing = client.existing_keys(project)
            except LabelStudioError as err:
                fatal = self._fail_all(items, err, result)
                continue
            plain = [r for r in items if not json.loads(r[3]).get("annotations")]
            fatal = self._send_plain(client, project, plain, existing, result)
            corrections = [r for r in items if r not in plain]
            if corrections and fatal is None:
                fatal = self._send_corrections(client, project, corrections, result)
            elif corrections:
                self._mark_failed([r[0] for r in corrections], fatal)
                result.failed += len(corrections)
        result.pending = self.pending_count()
        if result.pending == 0 and result.failed == 0:
            with closing(self._connect()) as con, con:
                con.execute("DELETE FROM state WHERE name = 'last_error'")
        return result

    def _send_plain(self, client, project: int, items: list[tuple], existing: dict, result: FlushResult):
        todo = []
        with closing(self._connect()) as con, con:
            for item_id, _, key, blob in items:
                if key in existing:
                    self._mark_sent(con, item_id, existing[key])
                    result.already += 1
                else:
                    todo.append((item_id, json.loads(blob)))
        return self._send(client, project, todo, result)

    def _fail_all(self, items: list[tuple], err: LabelStudioError, result: FlushResult) -> LabelStudioError | None:
        """Every item of a project stays pending with the reason; returns the error when it hits every project
        (server down, key refused), so the flush stops asking."""
        self._mark_failed([r[0] for r in items], err)
        result.failed += len(items)
        result.error = str(err)
        return err if isinstance(err, (LabelStudioUnavailable, LabelStudioAuthError)) else None

    def _send_corrections(self, client, project: int, items: list[tuple], result: FlushResult):
        """One by one: annotate the tweet's task (found by its key; asked again, since plain items may just have
        created it) or create the task with the annotation. Returns an error that hits every project."""
        try:
            existing = client.existing_keys(project)
        except LabelStudioError as err:
            return self._fail_all(items, err, result)
        for n, (item_id, _, _, blob) in enumerate(items):
            task = json.loads(blob)
            task_key = task["data"]["itjner_key"]
            if task_key not in existing:
                fatal = self._send(client, project, [(item_id, task)], result)
            else:
                fatal = self._annotate(client, item_id, existing[task_key], task, result)
            if fatal is not None:
                self._mark_failed([r[0] for r in items[n + 1:]], fatal)
                result.failed += len(items) - n - 1
                return fatal
        return None

    def _annotate(self, client, item_id: int, task_id: int, task: dict, result: FlushResult):
        from .tasks import task_tokens

        try:
            tokens = task_tokens(client.task_data(task_id))
            src = task["data"]["tokens"]
            outcome = client.add_correction(task_id, tokens, result_to_entities(src, task["annotations"][0]["result"]),
                                            src)
        except LabelStudioError as err:
            self._mark_failed([item_id], err)
            result.failed += 1
            result.error = str(err)
            return err if isinstance(err, (LabelStudioUnavailable, LabelStudioAuthError)) else None
        with closing(self._connect()) as con, con:
            self._mark_sent(con, item_id, task_id)
        if outcome == "already":
            result.already += 1
        else:
            result.sent += 1
        return None

    def _send(self, client, project: int, todo: list[tuple[int, dict]], result: FlushResult
              ) -> LabelStudioError | None:
        """Import `todo` in one batch; if the server rejects the batch, item by item to isolate the bad ones.
        Returns the error when it is one that will hit every other project too."""
        if not todo:
            return None
        try:
            ids = client.import_tasks(project, [task for _, task in todo])
        except (LabelStudioUnavailable, LabelStudioAuthError) as err:
            self._mark_failed([i for i, _ in todo], err)
            result.failed += len(todo)
            result.error = str(err)
            return err
        except LabelStudioError as err:
            if len(todo) == 1:
                self._mark_failed([todo[0][0]], err)
                result.failed += 1
                result.error = str(err)
                return None
            for item in todo:
                fatal = self._send(client, project, [item], result)
                if fatal is not None:
                    rest = todo[todo.index(item) + 1:]
                    self._mark_failed([i for i, _ in rest], fatal)
                    result.failed += len(rest)
                    return fatal
            return None
        with closing(self._connect()) as con, con:
            for (item_id, _), task_id in zip(todo, ids):
                self._mark_sent(con, item_id, task_id)
        result.sent += len(todo)
        return None
