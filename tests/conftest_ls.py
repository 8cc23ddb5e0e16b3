"""pytest plugin: a real Label Studio server (1.23.2, its own venv) on 127.0.0.1 for the Label Studio tests.

Register from tests/conftest.py with `pytest_plugins = ["conftest_ls"]` (tests/ is on sys.path there), or import the
fixtures into a test module. The server executable is $ITJNER_LS_BIN, default <repo>/.venv-ls/bin/label-studio
(`.ci/labelstudio.sh install` creates it). Without it the tests fail when CI=true and are skipped otherwise.

The first start on a fresh data dir runs the database migrations (30-60 s). The migrated, still empty data dir is
kept as a template under <repo>/.cache/ (gitignored; override with $ITJNER_LS_TEMPLATE) and every server starts on
a fresh copy of it (~3-5 s), so each test session gets an empty server quickly.

Fixtures: `ls_server` (session; a `LabelStudioServer`), `ls_client` (a connected `itjner.labelstudio` client),
`ls_project` (a fresh project id), `ls_server_factory` (extra servers the test may stop/restart; all stopped after).
"""
from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

LS_VERSION = "1.23.2"
LS_TOKEN = "itjner-test-token-0123456789"  # legacy API token of the test admin (6-40 characters)
LS_USER, LS_PASSWORD = "admin@example.com", "itjner-test-password"
REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT = float(os.environ.get("ITJNER_LS_START_TIMEOUT", "240"))


def ls_bin() -> Path:
    return Path(os.environ.get("ITJNER_LS_BIN") or REPO / ".venv-ls" / "bin" / "label-studio")


def require_ls_bin() -> Path:
    path = ls_bin()
    if not os.access(path, os.X_OK):
        msg = (f"Label Studio server not found at {path}: run `.ci/labelstudio.sh install` (creates .venv-ls with "
               f"label-studio=={LS_VERSION}) or point ITJNER_LS_BIN at a label-studio executable")
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_busy(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _health(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=2) as resp:
            return json.loads(resp.read().decode()).get("status") == "UP"
    except Exception:
        return False


class LabelStudioServer:
    """One `label-studio start` process on 127.0.0.1 with its own data dir; stop() sends SIGTERM."""

    def __init__(self, data_dir: Path, token: str = LS_TOKEN, port: int | None = None, executable: Path | None = None):
        self.data_dir = Path(data_dir)
        self.token = token
        self.port = port or free_port()
        self.executable = Path(executable or ls_bin())
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}.log"
        self.proc: subprocess.Popen | None = None
        self.start_seconds: list[float] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __repr__(self) -> str:
        return f"LabelStudioServer({self.url}, running={self.running})"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def env(self) -> dict:
        # A clean environment: Label Studio also reads stray HOST/PORT/USERNAME variables.
        home = self.data_dir / "home"
        home.mkdir(parents=True, exist_ok=True)
        return {
            "PATH": f"{self.executable.parent}:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8",
            "LABEL_STUDIO_BASE_DATA_DIR": str(self.data_dir),
            "LABEL_STUDIO_USERNAME": LS_USER, "LABEL_STUDIO_PASSWORD": LS_PASSWORD,
            "LABEL_STUDIO_USER_TOKEN": self.token, "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
            "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true", "LABEL_STUDIO_LATEST_VERSION_CHECK": "false",
            "LABEL_STUDIO_COLLECT_ANALYTICS": "false", "SENTRY_DSN": "", "FRONTEND_SENTRY_DSN": "",
            "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
            "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(self.data_dir),
        }

    def start(self, timeout: float = START_TIMEOUT) -> "LabelStudioServer":
        if self.running:
            return self
        if _port_busy(self.port):  # Label Studio would silently move to the next port
            self.port = free_port()
        t0 = time.monotonic()
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [str(self.executable), "start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(self.port)],
            env=self.env(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=self.data_dir)
        log.close()
        _LIVE.add(self)
        while not _health(self.url):
            if self.proc.poll() is not None:
                raise RuntimeError(f"Label Studio exited with {self.proc.returncode} while starting; "
                                   f"log {self.log_path}:\n{self.log_tail()}")
            if time.monotonic() - t0 > timeout:
                self.stop()
                raise RuntimeError(f"Label Studio not UP at {self.url} after {timeout:.0f} s; log {self.log_path}:\n"
                                   f"{self.log_tail()}")
            time.sleep(0.25)
        self.start_seconds.append(time.monotonic() - t0)
        return self

    def stop(self, timeout: float = 20) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # SIGINT is ignored by a backgrounded Label Studio
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None
        _LIVE.discard(self)
        # the port must be closed before anyone tests "server down"
        deadline = time.monotonic() + 10
        while _port_busy(self.port) and time.monotonic() < deadline:
            time.sleep(0.1)

    def restart(self) -> "LabelStudioServer":
        self.stop()
        return self.start()

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"


_LIVE: set[LabelStudioServer] = set()
_SESSION: dict[str, LabelStudioServer] = {}


@atexit.register
def _stop_all() -> None:
    for server in list(_LIVE):
        server.stop()


def template_dir() -> Path:
    default = REPO / ".cache" / f"labelstudio-template-{LS_VERSION}"
    return Path(os.environ.get("ITJNER_LS_TEMPLATE") or default)


def ensure_template(executable: Path) -> Path:
    """A migrated, empty data dir (admin user + legacy token), built once by a first start and then reused."""
    template = template_dir()
    if (template / ".complete").exists():
        return template
    template.parent.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix=".ls-template-", dir=template.parent))
    server = LabelStudioServer(build / "data", executable=executable)
    server.data_dir.mkdir()
    try:
        server.start()
    finally:
        server.stop()
    (server.data_dir / ".complete").write_text(json.dumps({"label-studio": LS_VERSION, "token": "fixed test token",
                                                           "first_start_s": server.start_seconds}))
    try:
        os.rename(server.data_dir, template)
    except OSError:  # another session built it meanwhile
        pass
    shutil.rmtree(build, ignore_errors=True)
    return template


def server_from_template(root: Path, name: str = "ls") -> LabelStudioServer:
    executable = require_ls_bin()
    template = ensure_template(executable)
    data = Path(root) / name
    shutil.copytree(template, data)
    return LabelStudioServer(data, executable=executable)


@pytest.fixture(scope="session")
def ls_server(tmp_path_factory) -> LabelStudioServer:
    """The shared server of this test session (empty at start)."""
    server = _SESSION.get("server")
    if server is None or not server.running:
        server = server_from_template(tmp_path_factory.mktemp("labelstudio")).start()
        _SESSION["server"] = server
    yield server
    if _SESSION.get("server") is server:
        _SESSION.pop("server")
        server.stop()


@pytest.fixture()
def ls_server_factory(tmp_path):
    """Start extra servers (each on a fresh copy of the template) that a test may stop and restart."""
    made: list[LabelStudioServer] = []

    def make(name: str = "ls") -> LabelStudioServer:
        server = server_from_template(tmp_path, name)
        made.append(server)
        return server.start()

    yield make
    for server in made:
        server.stop()


@pytest.fixture()
def ls_client(ls_server):
    from itjner.labelstudio import connect

    return connect(ls_server.url, ls_server.token)


@pytest.fixture()
def ls_project(ls_client, request) -> int:
    return ls_client.create_project(f"test {request.node.name}"[:50])
