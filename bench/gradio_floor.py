"""The floor under the app's load test: the same requests against a Gradio app that does nothing.

    python bench/gradio_floor.py [--clients 20] [--single 10] [--outputs 17] [--image-outputs 1]

Starts (in a subprocess, on a free 127.0.0.1 port) a Blocks app with the demo's /predict inputs (an image upload
and four text fields) and --outputs outputs (--image-outputs of them images returned as fresh JPEG files, as the
app returns its heatmaps; the rest text), whose function returns at once; then times one client alone and a
burst of N clients exactly as bench/load_test_app.py does. Whatever the floor costs, no model code can save: it is
Gradio's and gradio_client's per-request work (upload, queue, events) on this machine. Not a timed test.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from PIL import Image

from load_test_app import EXAMPLES, free_port, images, percentile, run, run_single, tweets

APP = '''
import os, shutil, sys, tempfile
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
import gradio as gr
n, k, picture = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]


def fresh_copy() -> str:
    fd, name = tempfile.mkstemp(suffix=".jpg")
    os.close(fd)
    return shutil.copy(picture, name)


def noop(*args):  # k fresh JPEG files (as the app writes its heatmaps), then text
    return tuple([fresh_copy() for _ in range(k)] + [args[1]] * (n - k))


with gr.Blocks() as demo:
    inputs = [gr.Image(type="filepath")] + [gr.Textbox() for _ in range(4)]
    outputs = [gr.Image(type="filepath") for _ in range(k)] + [gr.Textbox() for _ in range(n - k)]
    gr.Button().click(noop, inputs, outputs, api_name="predict", concurrency_limit=32)
demo.queue().launch(server_name="127.0.0.1", server_port=int(sys.argv[1]), quiet=True)
'''


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--single", type=int, default=10)
    p.add_argument("--outputs", type=int, help="outputs of the no-op event (default: as many as the demo's /predict)")
    p.add_argument("--image-outputs", type=int, default=0,
                   help="how many of the outputs are images returned as fresh JPEG files, as the app's heatmaps are "
                        "(a text-only model's answer carries one, the photo caption's heatmap; an image-reading "
                        "model's two)")
    p.add_argument("--fresh-sessions", action="store_true")
    p.add_argument("--seen-photos", action="store_true", help="as bench/load_test_app.py --seen-photos")
    p.add_argument("--json", help="also write the numbers here")
    args = p.parse_args(argv)
    if args.outputs is None:
        from itjner.app.tab_predict import PREDICT_API_OUTPUTS

        args.outputs = len(PREDICT_API_OUTPUTS)
    port = free_port()
    with tempfile.TemporaryDirectory() as work:
        script = Path(work, "noop_app.py")
        script.write_text(APP)
        picture = Path(work, "heatmap.jpg")
        Image.open(EXAMPLES / "stadium.jpg").convert("RGB").save(picture, "JPEG", quality=92)  # a heatmap's size
        proc = subprocess.Popen([sys.executable, str(script), str(port), str(args.outputs), str(args.image_outputs),
                                 str(picture)],
                                env=dict(os.environ, GRADIO_TEMP_DIR=work), stdout=subprocess.DEVNULL,
                                stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}/"
        try:
            for _ in range(240):
                try:
                    urllib.request.urlopen(url, timeout=2)
                    break
                except OSError:
                    time.sleep(0.25)
            new = None if args.seen_photos else "burst"  # the same uploads as the load test's
            alone = run_single(url, tweets(args.single), images(args.single, new and "alone"))
            cpu: dict = {}
            latencies, results, wall = run(url, tweets(args.clients), images(args.clients, new),
                                           warm=not args.fresh_sessions,
                                           warm_files=images(args.clients, new and "sessions"), cpu=cpu,
                                           server_pid=proc.pid)
        finally:
            proc.terminate()
    failed = sum(isinstance(r, Exception) for r in results)
    photos = "the example" if args.seen_photos else "new"
    print(f"no-op Gradio app, image upload + {args.outputs} outputs ({args.image_outputs} of them JPEG files; {photos} photos): one client alone p50 "
          f"{percentile(alone, 0.5):.3f} s; {args.clients} clients p50 {percentile(latencies, 0.5):.2f} s, "
          f"p95 {percentile(latencies, 0.95):.2f} s, {args.clients / wall:.1f} req/s "
          f"({percentile(latencies, 0.5) / percentile(alone, 0.5):.1f}x the lone client's){'; failed ' + str(failed) if failed else ''}")
    if cpu.get("server_cpu_s") is not None:
        print(f"CPU time of the burst: the no-op app {cpu['server_cpu_s']:.2f} s, the {args.clients} clients "
              f"{cpu['clients_cpu_s']:.2f} s")
    if args.json:
        import json

        Path(args.json).write_text(json.dumps({"clients": args.clients, "outputs": args.outputs,
                                               "image_outputs": args.image_outputs, "failed": failed,
                                               "photos": "seen" if args.seen_photos else "new", **cpu,
                                               "single_p50_s": percentile(alone, 0.5),
                                               "p50_s": percentile(latencies, 0.5),
                                               "requests_per_s": args.clients / wall}, indent=2) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
