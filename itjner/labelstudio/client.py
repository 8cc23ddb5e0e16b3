"""A Label Studio server through `label_studio_sdk` (SDK 2.x): errors with messages safe to show, push and pull.

Idempotency: each task carries `itjner_key` (tasks.compute_task_key). `push_tasks` lists the keys already in the
project and creates only the missing tasks, so a resend (after a timeout, from the outbox) never duplicates a task.

The API key (a legacy token or a personal access token; the SDK tells them apart and refreshes the latter) comes
from an argument or LABEL_STUDIO_API_KEY, the URL from an argument or LABEL_STUDIO_URL. The key never appears in a
message, log line or repr.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from ..data import Tweet
from .tasks import (LABEL_CONFIG, as_dict, field_of, entity_results, map_entities, result_to_entities, scored_entities,
                    task_key_of, task_tokens, tweets_from_tasks)

DEFAULT_URL = "http://localhost:8080"


class LabelStudioError(RuntimeError):
    """A Label Studio call failed; `reason` is a short category for queues ("server down", "refused key", ...)."""

    reason = "error"


class LabelStudioAuthError(LabelStudioError):
    reason = "refused key"


class LabelStudioUnavailable(LabelStudioError):
    reason = "server down"


class LabelStudioTimeout(LabelStudioUnavailable):
    reason = "timeout"


class Secret:
    """Holds the API key; its repr never shows it (so `vars(client)`, debuggers and loggers do not either)."""

    __slots__ = ("value",)

    def __init__(self, value: str):
        self.value = value

    def __repr__(self) -> str:
        return "<secret>"

    __str__ = __repr__

    def __reduce__(self):
        raise TypeError("an API key is not picklable")

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self


def scrub(text: str, secret: str | None) -> str:
    """`text` with every occurrence of `secret` replaced by ***."""
    if secret and len(secret) >= 4:
        text = text.replace(secret, "***")
    return text


def _env_url(url: str | None) -> str:
    return (url or os.environ.get("LABEL_STUDIO_URL") or DEFAULT_URL).rstrip("/")


@dataclass
class PushResult:
    created: list[int] = field(default_factory=list)  # new task ids
    skipped: list[str] = field(default_factory=list)  # itjner_keys already in the project
    refreshed: list[int] = field(default_factory=list)  # existing tasks that got this model version's prediction
    shown_version: str | None = None  # the model version whose predictions annotators see after the push
    version_note: str = ""            # why the project's version was left as it was

    def __str__(self) -> str:
        text = (f"{len(self.created)} task(s) created, {len(self.skipped)} already in the project, "
                f"{len(self.refreshed)} got predictions of the new model version")
        return text + (f"; {self.version_note}" if self.version_note else "")


class LabelStudioClient:
    """A thin wrapper over `label_studio_sdk.LabelStudio` (SDK 2.x) that turns failures into LabelStudioError
    subclasses with messages safe to show (the key is never included). Construction does not contact the server;
    `check()` (or `connect()`) does."""

    def __init__(self, url: str | None = None, api_key: str | None = None, timeout: float = 20.0):
        self.url = _env_url(url)
        key = api_key if api_key is not None else os.environ.get("LABEL_STUDIO_API_KEY")
        if not key:
            raise LabelStudioAuthError(
                f"no API key for Label Studio at {self.url}: set LABEL_STUDIO_API_KEY (Account & Settings > "
                "Personal Access Token, or the legacy token)")
        self._key = Secret(key)
        self.timeout = timeout
        self._sdk = None

    def __repr__(self) -> str:
        return f"LabelStudioClient(url={self.url!r})"

    __str__ = __repr__

    def __getstate__(self):  # never pickle the key into an outbox, a cache or a log
        raise TypeError("LabelStudioClient holds an API key and is not picklable")

    def __copy__(self):  # copies (e.g. of UI state) share the one client
        return self

    def __deepcopy__(self, memo):
        return self

    # -- plumbing
    @property
    def sdk(self):
        if self._sdk is None:
            from label_studio_sdk import LabelStudio

            try:
                self._sdk = LabelStudio(base_url=self.url, api_key=self._key.value, timeout=self.timeout, max_retries=0)
            except Exception as err:  # an expired/invalid personal access token is rejected here
                raise self._translate(err) from None
        return self._sdk

    def _translate(self, err: Exception) -> LabelStudioError:
        import httpx
        from label_studio_sdk.core.api_error import ApiError

        if isinstance(err, LabelStudioError):
            return err
        if isinstance(err, ApiError):
            status = err.status_code
            body = err.body
            detail = body.get("detail") if isinstance(body, dict) else body
            if status in (401, 403):
                extra = f" ({scrub(str(detail), self._key.value)})" if detail else ""
                return LabelStudioAuthError(f"Label Studio at {self.url} refused the API key{extra}")
            if status in (502, 503, 504):
                return LabelStudioUnavailable(f"Label Studio at {self.url} is unavailable (HTTP {status})")
            text = scrub(json.dumps(body, default=str)[:500] if not isinstance(body, str) else body[:500], self._key.value)
            return LabelStudioError(f"Label Studio at {self.url} answered HTTP {status}: {text}")
        if isinstance(err, httpx.TimeoutException):
            return LabelStudioTimeout(f"Label Studio at {self.url} did not answer within {self.timeout:g} s")
        if isinstance(err, (httpx.ConnectError, httpx.RemoteProtocolError, httpx.NetworkError)):
            return LabelStudioUnavailable(f"Label Studio at {self.url} is unreachable "
                                          f"({scrub(str(err), self._key.value) or err.__class__.__name__})")
        if isinstance(err, (httpx.InvalidURL, httpx.UnsupportedProtocol)):
            return LabelStudioError(f"invalid Label Studio URL {self.url!r}: {err}")
        return LabelStudioError(f"Label Studio at {self.url}: {err.__class__.__name__}: {scrub(str(err), self._key.value)}")

    def _call(self, fn: Callable, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as err:
            raise self._translate(err) from None

    # -- API
    def check(self) -> dict:
        """Who the key belongs to ({"id", "email"}); raises LabelStudioAuthError / LabelStudioUnavailable."""
        me = self._call(lambda: self.sdk.users.whoami())
        return {"id": field_of(me, "id"), "email": field_of(me, "email")}

    def create_project(self, title: str, label_config: str = LABEL_CONFIG) -> int:
        """A new project with the ITJNER labeling config; Label Studio wants a 3-50 character title."""
        if not 3 <= len(title.strip()) <= 50:
            raise ValueError(f"Label Studio project titles have 3 to 50 characters; got {len(title.strip())}")
        project = self._call(lambda: self.sdk.projects.create(title=title, label_config=label_config))
        return int(project.id)

    def projects_titled(self, title: str) -> list[int]:
        """Ids of the projects whose title is exactly `title` (surrounding spaces ignored)."""
        projects = self._call(lambda: list(self.sdk.projects.list(page_size=100)))
        return sorted(int(p.id) for p in projects if (p.title or "").strip() == title.strip())

    def project_for_title(self, title: str) -> tuple[int, bool]:
        """(project id, created): the one project with that title, or a new one; several with it -> refuse."""
        found = self.projects_titled(title)
        if len(found) > 1:
            raise LabelStudioError(f"{len(found)} projects at {self.url} are titled {title!r} (ids "
                                   f"{', '.join(map(str, found))}): pass --project ID instead of --create")
        if found:
            return found[0], False
        return self.create_project(title), True

    def project_title(self, project_id: int) -> str:
        return self._call(lambda: self.sdk.projects.get(id=int(project_id))).title

    def list_tasks(self, project_id: int, full: bool = True, page_size: int = 500) -> list[Any]:
        """All tasks of a project, every page (with annotations and predictions when `full`)."""
        def run():
            kwargs = {"project": int(project_id), "page_size": int(page_size)}
            if not full:
                kwargs.update(fields="task_only", include="id,data")
            return list(self.sdk.tasks.list(**kwargs))
        return self._call(run)

    def count_tasks(self, project_id: int) -> int:
        return len(self.list_tasks(project_id, full=False))

    def existing_keys(self, project_id: int) -> dict[str, int]:
        """itjner_key -> task id for the tasks already in the project."""
        keys = {}
        for task in sorted(self.list_tasks(project_id, full=False), key=lambda t: -int(field_of(t, "id"))):
            keys[task_key_of(task)] = int(field_of(task, "id"))  # the oldest task of a tweet wins
        return keys

    def import_tasks(self, project_id: int, tasks: list[dict]) -> list[int]:
        if not tasks:
            return []
        resp = self._call(lambda: self.sdk.projects.import_tasks(id=int(project_id), request=tasks,
                                                                 return_task_ids=True))
        ids = list(field_of(resp, "task_ids") or [])
        if len(ids) != len(tasks):
            raise LabelStudioError(f"Label Studio at {self.url} created {len(ids)} of {len(tasks)} tasks")
        return [int(i) for i in ids]

    def push_tasks(self, project_id: int, tasks: Sequence[dict]) -> PushResult:
        """Create the tasks whose itjner_key is not in the project yet (in the given order); an existing task that
        has no prediction of this push's model version gets it (so a retrained model refreshes the spans); the
        project's model version becomes it when every task has its prediction (`_show_version`)."""
        existing = {task_key_of(t): as_dict(t) for t in self.list_tasks(project_id)}
        result = PushResult()
        todo, seen = [], set()
        for task in tasks:
            key = task["data"].get("itjner_key")
            if key in existing or key in seen:
                result.skipped.append(key)
                if key in existing:
                    self._refresh(existing[key], task, result)
                continue
            if key:
                seen.add(key)
            todo.append(task)
        result.created = self.import_tasks(project_id, todo)
        version = ([p.get("model_version") for t in tasks for p in t.get("predictions") or []] or [None])[-1]
        if version:
            self._show_version(project_id, version, result)
        return result

    def _show_version(self, project_id: int, version: str, result: PushResult) -> None:
        """Label Studio shows annotators only the predictions of the project's model version. Switch it to
        `version` only when every task of the project has a prediction of it (or the project shows none yet): a
        partial re-push must not hide the pre-annotations of every task it left out."""
        current = field_of(self._call(lambda: self.sdk.projects.get(id=int(project_id))), "model_version") or ""
        if current == version:
            result.shown_version = version
            return
        tasks = self.list_tasks(project_id)
        lacking = sum(1 for t in tasks if version not in {field_of(p, "model_version")
                                                          for p in as_dict(t).get("predictions") or []})
        if current and lacking:
            result.shown_version = current
            result.version_note = (f"the project still shows the predictions of {current}: {lacking} of its "
                                   f"{len(tasks)} tasks have none of {version} (push them all to switch)")
            return
        self._call(lambda: self.sdk.projects.update(id=int(project_id), model_version=version))
        result.shown_version = version

    def _refresh(self, server_task: dict, task: dict, result: PushResult) -> None:
        have = {field_of(p, "model_version") for p in server_task.get("predictions") or []}
        tokens = task_tokens(server_task.get("data") or {})
        task_id = int(server_task["id"])
        for pred in task.get("predictions") or []:
            if pred.get("model_version") in have:
                continue
            ents = map_entities(task["data"]["tokens"], scored_entities(task["data"]["tokens"], pred["result"]), tokens)
            self._call(self.sdk.predictions.create, task=task_id, model_version=pred["model_version"],
                       score=pred.get("score"), result=entity_results(tokens, ents, id_prefix=f"v{task_id}p"))
            result.refreshed.append(task_id)

    def ensure_local_storage(self, project_id: int, folder) -> None:
        """A local-files import storage of the project over `folder` (so Label Studio serves its files to the
        project's members by `/data/local-files/?d=` URLs); made once, never synced (the tasks come from push)."""
        from pathlib import Path

        path = str(Path(folder).resolve())
        storages = self._call(lambda: list(self.sdk.import_storage.local.list(project=int(project_id))))
        if any(field_of(st, "path") == path for st in storages):
            return
        self._call(lambda: self.sdk.import_storage.local.create(project=int(project_id), path=path,
                                                                title="itjner images", use_blob_urls=True))

    @property
    def key(self) -> str:
        """The API key, for a request this process makes to the same server (never print it)."""
        return self._key.value

    def task_data(self, task_id: int) -> dict:
        return dict(field_of(self._call(lambda: self.sdk.tasks.get(id=int(task_id))), "data") or {})

    def annotations(self, task_id: int) -> list[dict]:
        return [as_dict(a) for a in self._call(lambda: list(self.sdk.annotations.list(id=int(task_id))))]

    def add_correction(self, task_id: int, tokens: Sequence[str], entities, from_tokens: Sequence[str]) -> str:
        """Add the correction as an annotation of an existing task unless one with the same entities is there
        (a resend after a lost answer finds it): "created" or "already"."""
        target = [e.key() for e in map_entities(from_tokens, entities, tokens)]
        for ann in self.annotations(task_id):
            if not ann.get("was_cancelled") and sorted(
                    e.key() for e in result_to_entities(tokens, ann.get("result") or [])) == sorted(target):
                return "already"
        moved = map_entities(from_tokens, entities, tokens)
        self._call(lambda: self.sdk.annotations.create(
            id=int(task_id), result=entity_results(tokens, moved, id_prefix=f"a{task_id}c"), ground_truth=False))
        return "created"

    def pull(self, project_id: int) -> tuple[list[Tweet], int]:
        """(one tweet per tweet, tagged by its latest annotation, task order; duplicate tasks merged)."""
        return tweets_from_tasks(self.list_tasks(project_id))

    def pull_annotations(self, project_id: int) -> list[Tweet]:
        """Annotated tasks (task order) as tweets with BIO tags from each tweet's latest annotation."""
        return self.pull(project_id)[0]


def connect(url: str | None = None, api_key: str | None = None, timeout: float = 20.0) -> LabelStudioClient:
    """A client whose key the server accepted (URL/key default to LABEL_STUDIO_URL / LABEL_STUDIO_API_KEY)."""
    client = LabelStudioClient(url, api_key, timeout)
    client.check()
    return client
