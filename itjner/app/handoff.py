"""Hand-off to Label Studio from the app: queue in the local outbox first, then deliver; messages never hold a key."""
from __future__ import annotations

import os
from typing import Any, Sequence

from ..data import Entity, Prediction
from .messages import UserError


# ----------------------------------------------------------------------------------------------- Label Studio
def _scrub(text: str, *secrets: str | None) -> str:
    from ..labelstudio import scrub

    for secret in secrets:
        text = scrub(text, secret)
    return text


def send_to_label_studio(pred: Prediction, image_bytes: bytes | None, corrected: Sequence[Entity], model_version: str,
                         project: Any, url: str | None = None, api_key: str | None = None, outbox=None,
                         timeout: float = 10.0) -> str:
    """Queue the tweet (with the user's corrections as an annotation when they differ from the prediction) in the
    outbox, then try to deliver everything pending. Returns a message for the UI: delivered, or "N queued: <why>".
    The API key never appears in it."""
    from ..labelstudio import task_from_prediction
    from ..labelstudio.outbox import Outbox

    try:
        project_id = int(project)
    except (TypeError, ValueError):
        raise UserError("Enter the Label Studio project id (a number, from the project's URL).") from None
    if project_id <= 0:
        raise UserError("Enter the Label Studio project id (a number, from the project's URL).")
    corrected = [Entity(e.start, e.end, e.type) for e in corrected]
    same = sorted(e.key() for e in corrected) == sorted(e.key() for e in pred.entities)
    task = task_from_prediction(pred, image_bytes, model_version, correction=None if same else corrected)
    box = outbox if outbox is not None else Outbox()
    what = "the prediction" if same else "your correction"
    if box.status_of(box.enqueue(task, project_id)) == "sent":
        head = f"{what[0].upper()}{what[1:]} is already in project {project_id}: not sent again."
        msg = f"{head} {flush_outbox(box, url, api_key, timeout)}" if box.pending_count() else head
    else:
        msg = f"Queued {what}. " + flush_outbox(box, url, api_key, timeout)
    return _scrub(msg, api_key, os.environ.get("LABEL_STUDIO_API_KEY"))


def flush_outbox(box=None, url: str | None = None, api_key: str | None = None, timeout: float = 10.0) -> str:
    from ..labelstudio import LabelStudioClient, LabelStudioError
    from ..labelstudio.outbox import Outbox

    box = box if box is not None else Outbox()
    if box.pending_count() == 0:
        return "Nothing queued."
    try:
        client = LabelStudioClient((url or "").strip() or None, (api_key or "").strip() or None, timeout=timeout)
        result = box.flush(client)
    except LabelStudioError as err:
        msg = f"{box.pending_count()} queued: {err}"
    else:
        if result.pending:
            msg = f"{result.pending} queued: {result.error or box.last_error or 'not sent yet'}"
        else:
            msg = f"Sent to Label Studio at {client.url} ({result.sent} created, {result.already} already there)."
    return _scrub(msg, api_key, os.environ.get("LABEL_STUDIO_API_KEY"))


def outbox_status() -> str:
    from ..labelstudio.outbox import Outbox

    try:
        return _scrub(Outbox().status_line(), os.environ.get("LABEL_STUDIO_API_KEY"))
    except Exception as err:  # an unwritable data folder must not break the page
        return f"outbox unavailable: {err.__class__.__name__}"
