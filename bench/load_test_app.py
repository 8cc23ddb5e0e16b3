"""Load test of the demo app: one client alone, then N concurrent gradio_client clients, against the real app.

    python bench/load_test_app.py [--checkpoint DIR | --url http://127.0.0.1:7860/] [--clients 20]

Without --url the app is started here (`python app.py` on a free 127.0.0.1 port) and stopped at the end. First one
client sends --single requests one after another (the single-user latency), then N clients send one request each at
the same moment. Every request carries a different tweet (so the app's prediction cache never answers) and a photo
no request has sent before (one of the example images with a few pixels changed: the app captions it, as it would a
user's own photo; --seen-photos sends the example images as they are, whose captions the app has cached by then);
each answer is checked against the same tweet tagged in this process with `Predictor` (same
checkpoint): tokens, tags and entity spans must match. Prints latency p50 / p95 / max of both phases, the burst's
requests per second and the ratio of the two p50s. Not a timed test.
"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"

SUBJECTS = ["Obama", "Taylor Swift", "Messi", "Angela Merkel", "Drake"]
PLACES = ["Paris", "London", "New York", "Texas", "Berlin", "Tokyo"]
ORGS = ["Apple", "NASA", "Arsenal", "Nike"]


def tweets(n: int) -> list[str]:
    out = []
    for i in range(n):
        out.append(f"{SUBJECTS[i % len(SUBJECTS)]} visits {PLACES[i % len(PLACES)]} with {ORGS[i % len(ORGS)]} "
                   f"people , day {i + 1}")
    return out


_PHOTOS: list[Path] = []


def images(n: int, new: str | None = None) -> list[Path]:
    """n of the example images in turn. new: instead, n photos no request has sent before (each example image with
    a few corner pixels set from `new` and its index, saved again as JPEG: same size and content, another digest),
    so the app captions every one of them as it would 20 users' own photos."""
    files = sorted(EXAMPLES.glob("*.jpg"))
    if not files:
        raise SystemExit(f"no example images in {EXAMPLES}: run python examples/make_examples.py")
    picked = [files[i % len(files)] for i in range(n)]
    if new is None:
        return picked
    if not _PHOTOS:
        import atexit
        import shutil

        _PHOTOS.append(Path(tempfile.mkdtemp(prefix="itjner-load-photos-")))
        atexit.register(shutil.rmtree, _PHOTOS[0], True)
    return [unseen_photo(path, f"{new}-{i}") for i, path in enumerate(picked)]


def unseen_photo(path: Path, tag: str) -> Path:
    import hashlib

    from PIL import Image

    out = _PHOTOS[0] / f"{path.stem}-{tag}.jpg"
    if not out.is_file():
        image = Image.open(path).convert("RGB")
        seed = hashlib.sha256(tag.encode()).digest()
        for k in range(8):  # an 8-pixel strip in the top-left corner
            image.putpixel((k, 0), tuple(seed[3 * k: 3 * k + 3]))
        image.save(out, "JPEG", quality=92)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(checkpoint: str, work: Path, device: str | None, threads: int | None = None
              ) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1",
               ITJNER_CACHE=str(work / "cache"), ITJNER_DATA_DIR=str(work / "data"),
               GRADIO_TEMP_DIR=str(work / "gradio"))
    cmd = [sys.executable, str(REPO / "app.py"), "--checkpoint", checkpoint, "--port", str(port)]
    if device:
        cmd += ["--device", device]
    if threads:
        cmd += ["--threads", str(threads)]
    log = (work / "app.log").open("w")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 300
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"app exited ({proc.returncode}):\n{(work / 'app.log').read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return proc, url
        except OSError:
            time.sleep(0.5)
    proc.terminate()
    raise SystemExit("app did not start within 300 s")


def expected(checkpoint: str, texts: list[str], files: list[Path]) -> list[dict]:
    """The same tweets tagged in this process: what each client must get back."""
    from itjner.data import Tweet, tokenize
    from itjner.predict import Predictor

    with tempfile.TemporaryDirectory() as cache:
        predictor = Predictor.from_pretrained(checkpoint, "cpu", cache_dir=cache)
        preds = predictor.predict([Tweet("app", tokenize(t)) for t in texts],
                                  images=[f.read_bytes() for f in files], given_captions=[None] * len(texts))
    return [{"tokens": p.tweet.tokens, "tags": p.tags,
             "spans": [(e.type, e.start, e.end) for e in p.entities]} for p in preds]


def server_reference(url: str, texts: list[str], files: list[Path], caption_source: str) -> list[dict]:
    """The tweets sent again, one at a time, to the idle app: the reference when this process cannot reproduce the
    app's image features (a randomly initialised test backbone such as `tiny-cnn` differs in every process).
    They name the checkpoint's caption source explicitly: the same model, backbone and cached features answer, but
    under another cache key, so the app computes them again instead of returning the burst's answers."""
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False)
    out = []
    for text, file in zip(texts, files):
        from itjner.app.tab_predict import PREDICT_API_OUTPUTS

        res = client.predict(handle_file(str(file)), text, "", None, caption_source, api_name="/predict")
        raw = dict(zip(PREDICT_API_OUTPUTS, res))["json"]
        out.append({"tokens": raw["tokens"], "tags": raw["tags"],
                    "spans": [(e["type"], e["start"], e["end"]) for e in raw["entities"]]})
    return out


def reproducible_here(checkpoint: str) -> bool:
    from itjner.configuration_itjner import ITJNERConfig

    return ITJNERConfig.load(checkpoint).image_backbone != "tiny-cnn"


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def run_single(url: str, texts: list[str], files: list[Path]) -> list[float]:
    """One client, requests one after another: what a lone user waits."""
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False)
    latencies = []
    for text, file in zip(texts, files):
        started = time.perf_counter()
        client.predict(handle_file(str(file)), text, "", None, "default", api_name="/predict")
        latencies.append(time.perf_counter() - started)
    return latencies


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far (Linux /proc; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(url: str, texts: list[str], files: list[Path], warm: bool = True, warm_files: list[Path] | None = None,
        cpu: dict | None = None, server_pid: int | None = None) -> tuple[list[float], list, float]:
    """N clients send one request each at the same moment. `warm`: each client has made one (untimed) request
    first (with warm_files[i], default files[i]), as a browser has by the time its user clicks (the page load opens
    the session, which Gradio builds on a session's first request: ~20 ms of server time); otherwise the burst pays
    for 20 new sessions too. `cpu`, when given, gets the CPU seconds the burst cost this process (its clients) and
    the server process `server_pid`: on a 2-core machine both share the cores."""
    from gradio_client import Client, handle_file

    n = len(texts)
    clients = [Client(url, verbose=False) for _ in range(n)]  # connect first: time the predictions only
    if warm:
        for i, client in enumerate(clients):
            client.predict(handle_file(str((warm_files or files)[i])), f"session {i} opens", "", None, "default",
                           api_name="/predict")
    latencies: list[float] = [0.0] * n
    results: list = [None] * n
    barrier = threading.Barrier(n + 1)

    def one(i: int) -> None:
        barrier.wait()
        started = time.perf_counter()
        try:
            results[i] = clients[i].predict(handle_file(str(files[i])), texts[i], "", None, "default",
                                            api_name="/predict")
        except Exception as err:  # recorded, reported as a failure
            results[i] = err
        latencies[i] = time.perf_counter() - started

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    before = (time.process_time(), cpu_seconds(server_pid) if server_pid else None)
    barrier.wait()
    wall_start = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - wall_start
    if cpu is not None:
        cpu["clients_cpu_s"] = time.process_time() - before[0]
        after = cpu_seconds(server_pid) if server_pid else None
        cpu["server_cpu_s"] = after - before[1] if after is not None and before[1] is not None else None
    return latencies, results, wall


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", help="model folder (default: the app's default checkpoint)")
    p.add_argument("--url", help="test an app that is already running (its checkpoint must be --checkpoint)")
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--single", type=int, default=10, help="requests of the lone client, one after another")
    p.add_argument("--fresh-sessions", action="store_true",
                   help="the burst's clients send their first request in the burst (new Gradio sessions)")
    p.add_argument("--seen-photos", action="store_true",
                   help="send the example images as they are (the app has captioned them before the burst) instead "
                        "of photos no request has sent before")
    p.add_argument("--device")
    p.add_argument("--threads", type=int, help="passed to app.py --threads")
    p.add_argument("--json", help="also write the numbers here")
    args = p.parse_args(argv)
    from itjner.app.launch import missing_checkpoint_message
    from itjner.checkpoints import default_checkpoint

    checkpoint = args.checkpoint or str(default_checkpoint()[0])
    if not Path(checkpoint, "model.safetensors").is_file():
        raise SystemExit(missing_checkpoint_message(Path(checkpoint)))
    new = None if args.seen_photos else "burst"
    texts, files = tweets(args.clients), images(args.clients, new)
    local = reproducible_here(checkpoint)
    want = expected(checkpoint, texts, files) if local else None
    with tempfile.TemporaryDirectory() as work:
        proc = None
        url = args.url
        if not url:
            proc, url = start_app(checkpoint, Path(work), args.device, args.threads)
        try:
            from gradio_client import Client, handle_file

            Client(url, verbose=False).predict(handle_file(str(images(1, new and "first")[0])), "warm up", "", None, "default",
                                               api_name="/predict")  # first call loads lazily built parts
            alone = run_single(url, [f"{t} , alone" for t in tweets(args.single)], images(args.single, new and "alone"))
            cpu: dict = {}
            latencies, results, wall = run(url, texts, files, warm=not args.fresh_sessions,
                                           warm_files=images(args.clients, new and "sessions"), cpu=cpu,
                                           server_pid=proc.pid if proc is not None else None)
            if want is None:
                from itjner.configuration_itjner import ITJNERConfig

                want = server_reference(url, texts, files, ITJNERConfig.load(checkpoint).caption_source)
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=30)
    from itjner.app.tab_predict import PREDICT_API_OUTPUTS

    failures = []
    for i, (res, exp) in enumerate(zip(results, want)):
        if isinstance(res, Exception):
            failures.append(f"client {i}: {res.__class__.__name__}: {res}")
            continue
        out = dict(zip(PREDICT_API_OUTPUTS, res))
        raw = out["json"]
        got = {"tokens": raw["tokens"], "tags": raw["tags"],
               "spans": [(e["type"], e["start"], e["end"]) for e in raw["entities"]]}
        if got != exp:
            failures.append(f"client {i}: got {got}, expected {exp}")
        elif "image" in raw["modalities"] and not (out["heatmap"] and Path(out["heatmap"]).is_file()):
            failures.append(f"client {i}: no heatmap file")
        elif "image" not in raw["modalities"] and "does not influence" not in out["status"]:
            failures.append(f"client {i}: a text-only checkpoint must say the image does not influence it")
    stats = {"single_p50_s": percentile(alone, 0.5), "single_p95_s": percentile(alone, 0.95),
             "clients": args.clients, "ok": args.clients - len(failures), "p50_s": percentile(latencies, 0.5),
             "p95_s": percentile(latencies, 0.95), "max_s": max(latencies), "mean_s": statistics.mean(latencies),
             "wall_s": wall, "requests_per_s": args.clients / wall, "fresh_sessions": args.fresh_sessions,
             "photos": "seen" if args.seen_photos else "new", **cpu, "checkpoint": checkpoint, "threads": args.threads,
             "reference": "in-process Predictor" if local else "the same tweets sent one at a time afterwards"}
    stats["p50_ratio"] = stats["p50_s"] / stats["single_p50_s"]
    print(f"reference: {stats['reference']}")
    print(f"one client alone ({args.single} requests): p50 {stats['single_p50_s']:.3f} s, "
          f"p95 {stats['single_p95_s']:.3f} s")
    print(f"{stats['ok']}/{args.clients} predictions correct; latency p50 {stats['p50_s']:.2f} s, "
          f"p95 {stats['p95_s']:.2f} s, max {stats['max_s']:.2f} s; all {args.clients} done in {wall:.2f} s "
          f"({args.clients / wall:.1f} req/s); p50 {stats['p50_ratio']:.1f}x the lone client's")
    if stats.get("server_cpu_s") is not None:
        print(f"CPU time of the burst: the app {stats['server_cpu_s']:.2f} s, the {args.clients} clients "
              f"{stats['clients_cpu_s']:.2f} s")
    for line in failures:
        print("FAIL", line)
    if args.json:
        Path(args.json).write_text(json.dumps(stats, indent=2) + "\n")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
