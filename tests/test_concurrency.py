"""Sixteen clients at once get exactly what each request gets alone (λ ablations included)."""

import random
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from load_test import request_pool, run_request  # noqa: E402


def test_sixteen_concurrent_clients_match_solo_runs(app_url):
    pool = request_pool(seed=5)
    alone = {i: run_request(app_url, request)[0] for i, request in enumerate(pool)}
    plan = random.Random(1).choices(range(len(pool)), k=32)
    with ThreadPoolExecutor(16) as executor:
        results = list(executor.map(lambda i: (i, run_request(app_url, pool[i])), plan))
    assert all(outcome == alone[i] for i, (outcome, _, _) in results)
    assert all(error is None for i, (_, _, error) in results if pool[i][0] != "bad input")
    assert any(pool[i][0] == "ablation" for i in plan) and any(pool[i][0] == "generate" for i in plan)
