"""Load test: launch the app, drive it with concurrent gradio_client clients sending a mix of every
endpoint (λ ablations included), and check each response equals what the same request gets alone.

    python benchmarks/load_test.py --clients 16 --requests 6
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from gradio_client import Client

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from diffllama.family import corpus  # noqa: E402


def request_pool(seed: int = 3) -> list[tuple]:
    """Varied requests: (name, [(api_name, args), ...]); a request with two calls runs them in one session."""
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
        pool.append(("ablation", [("/classify", (r.text, "diffllama-cls", "llama-cls")), ("/classify_ablation", (value,))]))
    pool.append(("bad input", [("/classify", ("   ", "diffllama-cls", "llama-cls"))]))
    return pool


def comparable(api_name: str, result) -> str:
    """The deterministic part of a response: the records JSON (figures and file paths vary)."""
    if api_name == "/classify":
        return json.dumps(result[4], sort_keys=True)
    if api_name == "/tag":
        return json.dumps(result[4], sort_keys=True)
    if api_name == "/answer":
        return json.dumps(result[7], sort_keys=True)
    if api_name == "/generate":
        return json.dumps(result[2], sort_keys=True)
    if api_name == "/classify_ablation":
        return json.dumps([result[1], result[2]], sort_keys=True)
    return json.dumps(result, sort_keys=True, default=str)


def run_request(url: str, request) -> tuple[str, float, str | None]:
    """(outcome, seconds, error message) — the outcome string is what must match the solo run."""
    _, calls = request
    client = Client(url, verbose=False)
    start = time.perf_counter()
    outcome = []
    error = None
    for api_name, args in calls:
        try:
            outcome.append(comparable(api_name, client.predict(*args, api_name=api_name)))
        except Exception as exc:  # noqa: BLE001 - a clear error message is a valid (and compared) response
            error = str(exc)
            outcome.append(f"error: {error}")
    return "\n".join(outcome), time.perf_counter() - start, error


def launch(port: int) -> subprocess.Popen:
    env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "GRADIO_SERVER_NAME": "127.0.0.1"}
    process = subprocess.Popen([sys.executable, str(ROOT / "app.py")], env=env, cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(120):
        try:
            Client(f"http://127.0.0.1:{port}/", verbose=False)
            return process
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(1)
    process.kill()
    raise SystemExit("the app did not start within 2 minutes")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=6, help="requests per client")
    parser.add_argument("--port", type=int, default=7870)
    parser.add_argument("--url", help="test a running app instead of launching one")
    parser.add_argument("--out", help="write the figures as JSON here")
    args = parser.parse_args()
    process = None if args.url else launch(args.port)
    url = args.url or f"http://127.0.0.1:{args.port}/"
    try:
        pool = request_pool()
        alone = {i: run_request(url, request)[0] for i, request in enumerate(pool)}  # each request by itself
        rng = random.Random(0)
        plan = [rng.randrange(len(pool)) for _ in range(args.clients * args.requests)]
        with ThreadPoolExecutor(args.clients) as executor:
            results = list(executor.map(lambda i: (i, *run_request(url, pool[i])), plan))
        mismatches = [(pool[i][0], outcome[:200], alone[i][:200]) for i, outcome, _, _ in results if outcome != alone[i]]
        expected_errors = sum(pool[i][0] == "bad input" for i in plan)
        unexpected = [(pool[i][0], e) for i, _, _, e in results if e and pool[i][0] != "bad input"]
        latencies = sorted(seconds for _, _, seconds, _ in results)
        report = {"clients": args.clients, "requests": len(results), "mismatches": len(mismatches),
                  "failures": len(unexpected), "bad-input requests answered with a message": expected_errors,
                  "p50_s": statistics.median(latencies), "p95_s": latencies[int(0.95 * (len(latencies) - 1))],
                  "max_s": latencies[-1], "kinds": sorted({pool[i][0] for i in plan})}
        print(json.dumps(report, indent=2))
        for mismatch in mismatches[:5]:
            print("MISMATCH", mismatch)
        for failure in unexpected[:5]:
            print("FAILURE", failure)
        if args.out:
            Path(args.out).write_text(json.dumps(report, indent=2))
        sys.exit(1 if mismatches or unexpected else 0)
    finally:
        if process:
            process.terminate()


if __name__ == "__main__":
    main()
