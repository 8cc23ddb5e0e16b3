"""Task images: read them from what a task holds (data URL, a file Label Studio serves, an image id in a folder),
and give Label Studio URLs instead of base64 (local-files storage).

A task's `data.image` may be
- `data:image/...;base64,...` (what `push` sends by default),
- `/data/upload/...` or `/data/local-files/?d=...` (a file Label Studio serves; fetched with the API key),
- an absolute URL on the Label Studio server itself (other hosts are refused: the backend never fetches arbitrary
  URLs from task data),
- empty, in which case `<images>/<image_id>.jpg` is used when an images folder is given.
The key is sent only to the Label Studio server and never appears in a message.
"""
from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path
from urllib.parse import quote, urljoin, urlsplit

MAX_FETCH_BYTES = 20_000_000


class ImageFetchError(ValueError):
    """The task's image could not be read; the message is safe to show (no key)."""


def decode_data_url(url: str) -> bytes:
    head, _, payload = url.partition(",")
    if not head.startswith("data:") or ";base64" not in head:
        raise ImageFetchError("image data URL is not base64")
    try:
        return base64.b64decode(payload, validate=False)
    except (binascii.Error, ValueError):
        raise ImageFetchError("image data URL does not decode") from None


def fetch_from_server(ref: str, base_url: str | None, token: str | None, timeout: float = 10.0) -> bytes:
    """GET a file Label Studio serves (a `/data/...` path, or a URL on the server's own host) with the key."""
    import httpx

    if not base_url:
        raise ImageFetchError(f"image {ref[:80]!r} is on the Label Studio server, whose URL is not known")
    url = urljoin(base_url.rstrip("/") + "/", ref)
    if urlsplit(url).netloc != urlsplit(base_url).netloc:
        raise ImageFetchError(f"image URL on another host ({urlsplit(url).netloc}) is not fetched")
    headers = {"Authorization": f"Token {token}"} if token else {}
    try:
        with httpx.Client(timeout=timeout, follow_redirects=False) as http:
            resp = http.get(url, headers=headers)
    except httpx.HTTPError as err:
        raise ImageFetchError(f"image {urlsplit(url).path} could not be fetched ({err.__class__.__name__})") from None
    if resp.status_code != 200:
        raise ImageFetchError(f"image {urlsplit(url).path} answered HTTP {resp.status_code}")
    if len(resp.content) > MAX_FETCH_BYTES:
        raise ImageFetchError(f"image {urlsplit(url).path} is larger than {MAX_FETCH_BYTES} bytes")
    return resp.content


def task_image(data: dict, base_url: str | None = None, token: str | None = None, images_dir=None
               ) -> tuple[bytes | None, str | None]:
    """(image bytes or None, problem or None) for one task's data; never raises for a bad image."""
    ref = str(data.get("image") or "")
    try:
        if ref.startswith("data:"):
            return decode_data_url(ref), None
        if ref.startswith(("/", "http://", "https://")):
            return fetch_from_server(ref, base_url, token), None
        if ref:
            raise ImageFetchError(f"unsupported image reference {ref[:40]!r}")
    except ImageFetchError as err:
        return None, str(err)
    if images_dir and data.get("image_id") is not None:
        from ..images import read_image_bytes

        return read_image_bytes(images_dir, str(data["image_id"])), None
    return None, None


def local_files_url(path: str | os.PathLike, document_root: str | os.PathLike) -> str:
    """The URL Label Studio serves a file under LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT by (`/data/local-files/?d=`)."""
    path, root = Path(path).resolve(), Path(document_root).resolve()
    try:
        rel = path.relative_to(root)
    except ValueError:
        raise ValueError(f"{path} is not under Label Studio's local-files document root {root}: put the images "
                         "folder below LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT") from None
    return "/data/local-files/?d=" + quote(rel.as_posix())


def local_image_urls(tweets, images_dir, document_root) -> dict[str, str]:
    """image id -> local-files URL for the tweets whose `<images_dir>/<id>.jpg` exists."""
    urls = {}
    for tw in tweets:
        path = Path(images_dir) / f"{tw.image_id}.jpg"
        if path.is_file():
            urls[str(tw.image_id)] = local_files_url(path, document_root)
    return urls


def save_images(tasks, out_dir, base_url: str | None, token: str | None) -> tuple[int, list[str]]:
    """Write each task's image as `<out_dir>/<image_id>.jpg` (the name `itjner train --images` reads); returns
    (written, problems)."""
    from .tasks import as_dict

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written, problems = 0, []
    for task in tasks:
        data = as_dict(task).get("data") or {}
        blob, problem = task_image(data, base_url, token)
        if problem:
            problems.append(f"task {as_dict(task).get('id')}: {problem}")
        if blob and data.get("image_id") is not None:
            name = Path(str(data["image_id"])).name  # an image id never escapes the folder
            (out / f"{name}.jpg").write_bytes(blob)
            written += 1
    return written, problems
