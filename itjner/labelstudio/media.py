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


def fetch_from_server(ref: str, base_url: str | None, token: str | None, timeout: float = 10.0,
                      max_bytes: int = MAX_FETCH_BYTES) -> bytes:
    """GET a file Label Studio serves (a `/data/...` path, or a URL on the server's own host) with the key. A file
    over `max_bytes` is refused from its Content-Length before any of it is read (or, without one, as soon as the
    stream passes the limit). Messages name the file by its path, never by a URL that could carry a token."""
    import httpx

    if not base_url:
        raise ImageFetchError(f"image {image_name(ref)} is on the Label Studio server, whose URL is not known")
    url = urljoin(base_url.rstrip("/") + "/", ref)
    if urlsplit(url).netloc != urlsplit(base_url).netloc:
        raise ImageFetchError(f"image URL on another host ({urlsplit(url).netloc}) is not fetched")
    headers = {"Authorization": f"Token {token}"} if token else {}
    name = image_name(url)
    try:
        with httpx.Client(timeout=timeout, follow_redirects=False) as http, http.stream("GET", url,
                                                                                       headers=headers) as resp:
            if resp.status_code != 200:
                raise ImageFetchError(f"image {name} answered HTTP {resp.status_code}")
            size = int(resp.headers.get("content-length") or 0)
            if size > max_bytes:
                raise ImageFetchError(f"image {name} is {size / 1e6:.1f} MB, over the {max_bytes / 1e6:.0f} MB limit: "
                                      "not downloaded")
            chunks, total = [], 0
            for chunk in resp.iter_bytes():
                total += len(chunk)
                if total > max_bytes:
                    raise ImageFetchError(f"image {name} is over the {max_bytes / 1e6:.0f} MB limit: download stopped")
                chunks.append(chunk)
    except httpx.HTTPError as err:
        raise ImageFetchError(f"image {name} could not be fetched ({err.__class__.__name__})") from None
    return b"".join(chunks)


def image_name(ref: str) -> str:
    """How a message names an image: its path (a local-files `?d=` path included), no host, no other query."""
    if ref.startswith("data:"):
        return "data URL " + ref[5:ref.find(";")] if ";" in ref[:40] else "data URL"
    parts = urlsplit(ref)
    if parts.path.rstrip("/").endswith("/data/local-files") and parts.query.startswith("d="):
        from urllib.parse import parse_qs

        return "local file " + (parse_qs(parts.query).get("d") or ["?"])[0]
    return parts.path[:120] or ref[:40]


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


def task_images(datas: list[dict], base_url: str | None = None, token: str | None = None, images_dir=None,
                workers: int = 8) -> list[tuple[bytes | None, str | None]]:
    """`task_image` for many tasks, the server fetches concurrently (in input order)."""
    from concurrent.futures import ThreadPoolExecutor

    if len(datas) <= 1:
        return [task_image(d, base_url, token, images_dir) for d in datas]
    with ThreadPoolExecutor(max_workers=min(workers, len(datas))) as pool:
        return list(pool.map(lambda d: task_image(d, base_url, token, images_dir), datas))


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
    """Write each task's image as `<out_dir>/<image_id>.jpg` (the name `itjner train --images` reads), fetched
    concurrently; returns (written, problems)."""
    from .tasks import as_dict

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = [as_dict(task) for task in tasks]
    datas = [row.get("data") or {} for row in rows]
    written, problems = 0, []
    for row, data, (blob, problem) in zip(rows, datas, task_images(datas, base_url, token)):
        if problem:
            problems.append(f"task {row.get('id')}: {problem}")
        if blob and data.get("image_id") is not None:
            name = Path(str(data["image_id"])).name  # an image id never escapes the folder
            (out / f"{name}.jpg").write_bytes(blob)
            written += 1
    return written, problems
