"""Load test: launch the app, drive it with concurrent gradio_client clients sending a mix of every
endpoint (each tab's run, then its views in the same session, λ ablations included) while a few
hostile clients flood the queue and send huge inputs; check each well-behaved response equals what
the same request gets alone, and sample the app's memory through the run and after the clients leave.

    python benchmarks/load_test.py --clients 16 32 64 --requests 5 --out load.json

Each launch gets its own temporary folder for gradio's cache and the app's exports, so the disk the
app uses is measured too: after ``--views`` attention views (and a few exports), and after shutdown.

    python benchmarks/load_test.py --flood-address 60 --out flood.json

One address floods the model queue for 60 s with a fresh session hash for every join (as a script
can), never reading an answer, while a visitor from another address runs ``/classify`` again and again:
the joins accepted and refused, and the visitor's p50 / p95 / max (target: p95 under 10 s). Addresses
are told apart as a proxy on this machine tells them (X-Forwarded-For from 127.0.0.1, which uvicorn
trusts).

    python benchmarks/load_test.py --targets

The time targets the tests do not assert (they assert what is answered): each refusal — 5 MB and 50 MB
texts, a QA context of 10,000 emoji or 5,001 combining marks, 5,001 combining marks to /tag and to
/attention_map (past the models' positions), unclear values, too few arguments, a 100 KB address —
within 1 s, wall and the app's CPU seconds, on an idle queue.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
from gradio_client import Client

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from diffllama.family import corpus  # noqa: E402

VIEWS = {"classify": ("classify", ("diffllama-cls", "llama-cls")), "tag": ("tag", ("diffllama-tag", "llama-tag"))}


def request_pool(seed: int = 3) -> list[tuple]:
    """Varied requests: (name, [(api_name, args), ...]); a request with several calls runs them in one session."""
    rng = random.Random(seed)
    reviews = corpus.generate("review", seed, 6)
    tagged = corpus.generate("tagged", seed, 6)
    retrievals = corpus.generate("retrieval", seed, 6)
    stories = corpus.generate("story", seed, 6)
    pool = []
    for r in reviews:
        pool.append(("classify", [("/classify", (r.text, "diffllama-cls", "llama-cls"))]))
    for t in tagged:
        pool.append(("tag", [("/tag", (t.text, "diffllama-tag", "llama-tag"))]))
    for q in retrievals:
        pool.append(("answer", [("/answer", (q.question, q.context, 3, "diffllama-qa", "llama-qa"))]))
    for s in stories:
        prompt = " ".join(s.text.split()[: rng.randint(4, 9)])
        pool.append(("generate", [("/generate", (prompt, 12, rng.random() < 0.5, 0.9, 0.95, rng.randint(0, 99),
                                                 "diffllama-lm", "llama-lm"))]))
    for r, value in zip(reviews[:4], (0.0, 0.3, 0.6, 1.2)):  # per-request λ overrides must not leak into others
        pool.append(("ablation", [("/classify", (r.text, "diffllama-cls", "llama-cls")),
                                  ("/classify_ablation", ("A", value))]))
    for (tab, (api, models)), text in zip(VIEWS.items(), (reviews[4].text, tagged[4].text)):
        pool.append(("views", [(f"/{api}", (text, *models)), (f"/{tab}_attention", ("A and B", 1, 0, "diff", 64)),
                               (f"/{tab}_overview", ("A", "diff", "entropy", "layer × head")),
                               (f"/{tab}_compare", ("",))]))
    q = retrievals[5]
    pool.append(("views", [("/answer", (q.question, q.context, 3, "diffllama-qa", "llama-qa")),
                           ("/qa_attention", ("B", 0, 1, "softmax", 64))]))
    pool.append(("bad input", [("/classify", ("   ", "diffllama-cls", "llama-cls"))]))
    return pool


def comparable(result) -> str:
    """A response as text to compare with the same request alone: file paths (fresh per call), the
    time a figure's provenance names and plotly's generated ids left out."""
    text = json.dumps(result, sort_keys=True, default=str)
    text = re.sub(r'"[^"]*/(gradio|diffllama-lens-exports)/[^"]*"', '"<file>"', text)
    text = re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", "<time>", text)
    return re.sub(r'\\"uid\\": \\"[^"\\]*\\"', "", text)


VISITORS = itertools.count()


def visitor_address() -> str:
    """An address of its own for each simulated visitor (RFC 2544's benchmarking range), as a proxy on
    this machine reports it: the server caps requests per address, and strangers have their own."""
    n = next(VISITORS)
    return f"198.18.{n // 250 % 250}.{n % 250 + 1}"


def run_request(url: str, request) -> tuple[str, float, str | None]:
    """(outcome, seconds, error message) — the outcome string is what must match the solo run. Each
    request is a visitor of its own (a session, from an address of its own)."""
    _, calls = request
    start = time.perf_counter()
    outcome, error = [], None
    try:  # a browser waits for a busy server; gradio_client's own default gives up after 5 s
        client = Client(url, verbose=False, headers={"X-Forwarded-For": visitor_address()}, httpx_kwargs={"timeout": 60})
    except Exception as exc:  # noqa: BLE001 - the server did not even answer: a failure
        return f"error: {exc}", time.perf_counter() - start, str(exc)
    for api_name, args in calls:
        try:
            outcome.append(comparable(client.predict(*args, api_name=api_name)))
        except Exception as exc:  # noqa: BLE001 - a clear error message is a valid (and compared) response
            error = str(exc)
            outcome.append(f"error: {error}")
    return "\n".join(outcome), time.perf_counter() - start, error


# --- hostile clients -----------------------------------------------------------------------------
def flood_session(url: str, jobs: int = 40) -> dict:
    """One session submits many long generations and never reads them."""
    client = Client(url, verbose=False)
    submitted = [client.submit("Anna walked to", 200, True, 0.8, 0.95, 0, "diffllama-lm", "llama-lm", api_name="/generate")
                 for _ in range(jobs)]
    outcomes = {"completed": 0, "refused": 0, "other errors": 0}
    for job in submitted:
        try:
            job.result(timeout=600)
            outcomes["completed"] += 1
        except Exception as error:  # noqa: BLE001
            outcomes["refused" if "requests waiting or running" in str(error) else "other errors"] += 1
    return {"jobs": jobs, **outcomes}


def flood_rest(url: str, calls: int = 40) -> dict:
    """Plain HTTP calls with no session, never read back."""
    body = {"data": ["Anna walked to", 200, True, 0.8, 0.95, 0, "diffllama-lm", "llama-lm"]}
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda _: httpx.post(url + "gradio_api/call/generate", json=body, timeout=60).status_code,
                              range(calls)))
    return {"calls": calls, "accepted": codes.count(200), "refused": codes.count(422)}


def huge_inputs(url: str) -> dict:
    """5 MB and 50 MB texts to /answer, /classify and /tag: the answer, and how fast."""
    seconds = {}
    for megabytes in (5, 50):
        text = "word " * (megabytes * 200_000)
        for api, data in (("answer", ["What?", text, 3, "diffllama-qa", "llama-qa"]), ("classify", [text, "diffllama-cls", "llama-cls"]),
                          ("tag", [text, "diffllama-tag", "llama-tag"])):
            body = json.dumps({"data": data})
            start = time.perf_counter()
            status = httpx.post(url + f"gradio_api/call/{api}", content=body, timeout=60,
                                headers={"Content-Type": "application/json"}).status_code
            seconds[f"{megabytes} MB /{api}"] = (status, round(time.perf_counter() - start, 3))
    return seconds


def hostile(url: str) -> dict:
    with ThreadPoolExecutor(3) as pool:
        session, rest, huge = pool.submit(flood_session, url), pool.submit(flood_rest, url), pool.submit(huge_inputs, url)
        return {"flooding session": session.result(), "flooding API calls": rest.result(), "huge inputs": huge.result()}


# --- one address, any number of sessions ------------------------------------------------------------
FLOODER, VISITOR = "203.0.113.7", "198.51.100.9"  # documentation addresses (RFC 5737)
GENERATION = ["Anna walked to", 200, True, 0.8, 0.95, 0, "diffllama-lm", "llama-lm"]


def fn_index(url: str, api_name: str) -> int:
    config = httpx.get(url + "config", timeout=60).json()
    return next(d["id"] for d in config["dependencies"] if d.get("api_name") == api_name)


def flood_address(url: str, seconds: float, stop: threading.Event) -> dict:
    """Joins from one address, each with a session hash made up for it, as fast as they are answered,
    for ``seconds`` (or until ``stop``); none is ever read."""
    index, counts, deadline = fn_index(url, "generate"), {"accepted": 0, "refused": 0, "other": 0}, time.monotonic() + seconds
    with httpx.Client(timeout=60, headers={"X-Forwarded-For": FLOODER}) as http:
        while time.monotonic() < deadline and not stop.is_set():
            body = {"data": GENERATION, "fn_index": index, "session_hash": f"made-up-{random.getrandbits(64):x}",
                    "event_data": None, "trigger_id": None}
            status = http.post(url + "gradio_api/queue/join", json=body).status_code
            counts["accepted" if status == 200 else "refused" if status == 422 else "other"] += 1
    return {"address": FLOODER, "seconds": seconds, "joins": sum(counts.values()), **counts}


def visitor(url: str, stop: threading.Event) -> list[float]:
    """Another address runs /classify again and again until ``stop``: the seconds each took."""
    client = Client(url, verbose=False, headers={"X-Forwarded-For": VISITOR}, httpx_kwargs={"timeout": 600})
    seconds = []
    while not stop.is_set():
        start = time.perf_counter()
        client.predict("The film was not bad at all.", "diffllama-cls", "llama-cls", api_name="/classify")
        seconds.append(time.perf_counter() - start)
    return seconds


def flooded_address(url: str, seconds: float) -> dict:
    alone = visitor_alone(url)
    stop = threading.Event()
    with ThreadPoolExecutor(2) as pool:
        flood = pool.submit(flood_address, url, seconds, stop)
        other = pool.submit(visitor, url, stop)
        flooded = flood.result()
        stop.set()
        latencies = sorted(other.result())
    return {"flood": flooded, "visitor": {"address": VISITOR, "alone_s": alone, "requests": len(latencies),
                                          "p50_s": round(statistics.median(latencies), 2),
                                          "p95_s": round(latencies[int(0.95 * (len(latencies) - 1))], 2),
                                          "max_s": round(latencies[-1], 2)}}


def visitor_alone(url: str) -> float:
    client = Client(url, verbose=False, headers={"X-Forwarded-For": VISITOR})
    client.predict("The film was not bad at all.", "diffllama-cls", "llama-cls", api_name="/classify")  # loads, warms
    start = time.perf_counter()
    client.predict("The film was not bad at all.", "diffllama-cls", "llama-cls", api_name="/classify")
    return round(time.perf_counter() - start, 2)


# --- time targets the tests leave to this script ------------------------------------------------------
def refusal_targets(url: str, pid: int, target: float = 1.0) -> dict:
    """Each refusal's wall time and the app's CPU seconds meanwhile (target: under ``target`` s)."""
    process, report = psutil.Process(pid), {}
    qa = lambda context: ["What is it?", context, 3, "diffllama-qa", "llama-qa"]  # noqa: E731
    cases = {
        "5 MB text to /classify": ("classify", ["word " * 1_000_000, "diffllama-cls", "llama-cls"]),
        "50 MB text to /tag": ("tag", ["word " * 10_000_000, "diffllama-tag", "llama-tag"]),
        "QA context of 10,000 emoji": ("answer", qa("😀" * 10_000)),
        "QA context of 5,001 combining marks": ("answer", qa("e" + "\u0301" * 5_000)),
        "5,001 combining marks to /tag": ("tag", ["a" + "\u0301" * 5_000, "diffllama-tag", "llama-tag"]),
        "5,001 combining marks to /attention_map": ("attention_map", ["a" + "\u0301" * 5_000, "", "diffllama-cls",
                                                                       "classification", 0, 0, "diff", 64, "weight"]),
        "seed 2**70": ("generate", [*GENERATION[:5], 2 ** 70, *GENERATION[6:]]),
        "slider given text": ("generate", [GENERATION[0], "lots", *GENERATION[2:]]),
        "map size -1": ("attention_map", ["Bob met Clara.", "", "diffllama-cls", "classification", 0, 0, "diff", -1, "weight"]),
        "too few arguments": ("classify", ["Bob"]),
    }
    for name, (api, data) in cases.items():
        cpu, start = sum(process.cpu_times()[:2]), time.perf_counter()
        response = httpx.post(url + f"gradio_api/call/{api}", content=json.dumps({"data": data}), timeout=120,
                              headers={"Content-Type": "application/json"})
        status, answer = response.status_code, response.text
        if status == 200:  # queued: the refusal comes on the event's stream
            answer = httpx.get(url + f"gradio_api/call/{api}/{response.json()['event_id']}", timeout=120).text
        wall = time.perf_counter() - start
        report[name] = {"status": status, "refused": status != 200 or "event: error" in answer, "wall_s": round(wall, 3),
                        "app_cpu_s": round(sum(process.cpu_times()[:2]) - cpu, 3), "within_target": wall < target}
    host, port = url.split("//")[1].rstrip("/").split(":")
    cpu, start = sum(process.cpu_times()[:2]), time.perf_counter()
    connection = http.client.HTTPConnection(host, int(port), timeout=120)
    connection.request("GET", "/?tab=classification&text=" + "a" * 100_000)
    status = connection.getresponse().status
    wall = time.perf_counter() - start
    report["100 KB address"] = {"status": status, "refused": status == 414, "wall_s": round(wall, 3),
                                "app_cpu_s": round(sum(process.cpu_times()[:2]) - cpu, 3), "within_target": wall < target}
    return report


# --- the app process -----------------------------------------------------------------------------
class RSS:
    """The app process's resident memory, sampled in the background."""

    def __init__(self, pid: int, every: float = 0.25):
        self.process, self.samples, self.every = psutil.Process(pid), [], every
        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self):
        while True:
            try:
                self.samples.append(self.process.memory_info().rss)
            except psutil.Error:  # the app has stopped
                return
            time.sleep(self.every)

    def mark(self) -> int:
        return len(self.samples)

    def peak_since(self, mark: int) -> float:
        return max(self.samples[mark:], default=0) / 1e9

    def now(self) -> float:
        return self.process.memory_info().rss / 1e9


def launch(port: int, folder: Path | None = None, **settings) -> subprocess.Popen:
    """The app in its own process, with its files in ``folder`` (a fresh temporary one by default) and
    ``settings`` as environment variables."""
    folder = folder or Path(tempfile.mkdtemp(prefix="lens-app-"))
    env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "GRADIO_SERVER_NAME": "127.0.0.1",
           "GRADIO_TEMP_DIR": str(folder / "gradio"), "DIFFLLAMA_LENS_EXPORT_DIR": str(folder / "exports"),
           **{name: str(value) for name, value in settings.items()}}
    log = (folder / "app.log").open("w")  # the app's own log, to read if it fails
    process = subprocess.Popen([sys.executable, str(ROOT / "app.py")], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    for _ in range(600):  # a busy machine takes minutes
        if process.poll() is not None:
            raise SystemExit(f"the app stopped (exit {process.returncode}); its log: {folder / 'app.log'}")
        try:
            Client(f"http://127.0.0.1:{port}/", verbose=False)
            return process
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(1)
    process.kill()
    raise SystemExit("the app did not start within 10 minutes")


def disk_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def views_on_disk(url: str, folder: Path, views: int) -> dict:
    """Disk used by ``views`` attention views of one session, and by 10 exports after them."""
    client = Client(url, verbose=False)
    client.predict("The film was not bad at all.", "diffllama-cls", "llama-cls", api_name="/classify")
    before = disk_bytes(folder)
    for i in range(views):
        client.predict("A and B", i % 3, i % 2, "diff", 64, api_name="/classify_attention")
    after_views = disk_bytes(folder)
    for i in range(10):
        client.predict("A and B", i % 3, 0, "diff", 64, api_name="/classify_export")
    return {"views": views, "bytes before views": before, "bytes after views": after_views,
            "bytes after 10 exports": disk_bytes(folder)}


def load(url: str, pool: list, alone: dict, clients: int, requests: int, rss: RSS, with_hostile: bool) -> dict:
    rng = random.Random(clients)
    plan = [rng.randrange(len(pool)) for _ in range(clients * requests)]
    mark = rss.mark()
    with ThreadPoolExecutor(clients + 1) as executor:
        attacks = executor.submit(hostile, url) if with_hostile else None
        results = list(executor.map(lambda i: (i, *run_request(url, pool[i])), plan))
        attacked = attacks.result() if attacks else None
    mismatches = [(pool[i][0], outcome[:300], alone[i][:300]) for i, outcome, _, _ in results if outcome != alone[i]]
    unexpected = [(pool[i][0], e) for i, _, _, e in results if e and pool[i][0] != "bad input"]
    latencies = sorted(seconds for _, _, seconds, _ in results)
    report = {"clients": clients, "requests": len(results), "failures": len(unexpected), "mismatches": len(mismatches),
              "p50_s": round(statistics.median(latencies), 2),
              "p95_s": round(latencies[int(0.95 * (len(latencies) - 1))], 2), "max_s": round(latencies[-1], 2),
              "peak_rss_gb": round(rss.peak_since(mark), 2), "rss_at_end_gb": round(rss.now(), 2),
              "kinds": sorted({pool[i][0] for i in plan}), "hostile": attacked}
    for mismatch in mismatches[:3]:
        print("MISMATCH", mismatch, file=sys.stderr)
    for failure in unexpected[:3]:
        print("FAILURE", failure, file=sys.stderr)
    return report


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, nargs="+", default=[16])
    parser.add_argument("--requests", type=int, default=5, help="requests per client")
    parser.add_argument("--no-hostile", action="store_true", help="well-behaved clients only")
    parser.add_argument("--views", type=int, default=100, help="attention views for the disk measurement")
    parser.add_argument("--port", type=int, default=7870)
    parser.add_argument("--out", help="write the figures as JSON here")
    parser.add_argument("--flood-address", type=float, metavar="SECONDS",
                        help="only: one address floods with fresh session hashes for SECONDS; another visitor's latency")
    parser.add_argument("--targets", action="store_true", help="only: the refusals' times against their 1 s target")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="lens-load-"))
    process = launch(args.port, folder)
    url = f"http://127.0.0.1:{args.port}/"
    if args.flood_address or args.targets:
        try:
            report = flooded_address(url, args.flood_address) if args.flood_address else refusal_targets(url, process.pid)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
        print(json.dumps(report, indent=2))
        if args.out:
            Path(args.out).write_text(json.dumps(report, indent=2))
        return
    rss = RSS(process.pid)
    report = {"rss_idle_gb": round(rss.now(), 2), "runs": []}
    try:
        pool = request_pool()
        alone = {i: run_request(url, request)[0] for i, request in enumerate(pool)}  # each request by itself
        for clients in args.clients:
            report["runs"].append(load(url, pool, alone, clients, args.requests, rss, not args.no_hostile))
            print(json.dumps(report["runs"][-1]), flush=True)
        time.sleep(30)  # the clients have left: their heartbeats stop and their pages unload
        report["rss_after_clients_left_gb"] = round(rss.now(), 2)
        report["disk"] = views_on_disk(url, folder, args.views)
    finally:
        process.send_signal(signal.SIGTERM)  # as docker stop / a Space restart does
        process.wait(timeout=60)
    report["disk"] = {**report.get("disk", {}), "bytes after shutdown": disk_bytes(folder)}
    print(json.dumps(report, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))
    sys.exit(1 if any(run["mismatches"] or run["failures"] for run in report["runs"]) else 0)


if __name__ == "__main__":
    main()
