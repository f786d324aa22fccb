"""What strangers can do to a public server, each through the API as a visitor would: what they get,
how fast, and that the next visitor is still served. Small sizes stand for big ones where a limit
makes them equivalent (a run store of a few runs for 2 GB, 20 queued jobs for 500)."""

import http.server
import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from gradio_client import Client

from components import common, run_store
from diffllama import limits, loading

CLASSIFY = ("diffllama-cls", "llama-cls")


@pytest.fixture
def client(app_url):
    return Client(app_url, verbose=False)


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    try:
        return fn(*args, **kwargs), None, time.perf_counter() - start
    except Exception as error:  # noqa: BLE001 - the refusal is what is measured
        return None, str(error), time.perf_counter() - start


def classify(client, text="Bob met Clara in Lyon."):
    return client.predict(text, *CLASSIFY, api_name="/classify")


def serves(app_url):
    """A fresh visitor is answered, and quickly."""
    result, error, seconds = timed(classify, Client(app_url, verbose=False))
    assert error is None and seconds < 10, (error, seconds)


def post(app_url, api_name, data, session="hostile"):
    """A raw API call, as any HTTP client can send it (gradio_client refuses to encode some inputs):
    (status, answer, seconds of the request itself)."""
    body = json.dumps({"data": data, "session_hash": session})
    start = time.perf_counter()
    response = httpx.post(app_url + "gradio_api/call/" + api_name, content=body,
                          headers={"Content-Type": "application/json"}, timeout=60)
    return response.status_code, response.text, time.perf_counter() - start


# --- memory held for visitors ---------------------------------------------------------------------
def test_runs_are_held_within_the_bound_and_an_evicted_run_says_so(app_url, monkeypatch):
    store = run_store.RunStore(max_bytes=1e12, ttl_s=3600)
    monkeypatch.setattr(run_store, "STORE", store)  # only this test's runs
    visitors = [Client(app_url, verbose=False) for _ in range(4)]
    classify(visitors[0], "word " * 300)
    per_run = store.nbytes
    store.max_bytes = 2.5 * per_run  # two runs fit, like 2 GB of long runs
    for visitor in visitors:
        classify(visitor, "word " * 300)
    assert store.nbytes <= 2.5 * per_run
    _, error, seconds = timed(visitors[0].predict, "A", 0, 0, "diff", 64, api_name="/classify_attention")
    assert "this run has expired; run the tab again" in error and seconds < 2
    assert visitors[3].predict("A", 0, 0, "diff", 64, api_name="/classify_attention")  # the newest is kept
    classify(visitors[0])
    assert visitors[0].predict("A", 0, 0, "diff", 64, api_name="/classify_attention")


def test_idle_runs_expire_and_a_closed_page_frees_its_runs(app_url, monkeypatch):
    idle, leaving = Client(app_url, verbose=False), Client(app_url, verbose=False)
    classify(idle)
    monkeypatch.setattr(run_store.STORE, "ttl_s", 0.0)  # sessions opened over plain HTTP never unload
    run_store.STORE.sweep()
    _, error, _ = timed(idle.predict, "A", 0, 0, "diff", 64, api_name="/classify_attention")
    assert "this run has expired" in error
    monkeypatch.setattr(run_store.STORE, "ttl_s", 3600.0)
    classify(leaving)
    sessions = lambda: {session for session, _ in run_store.STORE._entries}  # noqa: E731
    assert leaving.session_hash in sessions()
    # a browser keeps a heartbeat stream open; closing it (the page) runs demo.unload
    with httpx.stream("GET", f"{app_url}gradio_api/heartbeat/{leaving.session_hash}", timeout=10) as stream:
        next(stream.iter_lines())
    deadline = time.time() + 10
    while leaving.session_hash in sessions() and time.time() < deadline:
        time.sleep(0.1)
    assert leaving.session_hash not in sessions()


# --- input sizes ----------------------------------------------------------------------------------
@pytest.mark.parametrize("api_name, make", [
    ("answer", lambda text: ["What is it?", text, 3, "diffllama-qa", "llama-qa"]),
    ("classify", lambda text: [text, *CLASSIFY]),
    ("tag", lambda text: [text, "diffllama-tag", "llama-tag"]),
])
def test_huge_inputs_are_refused_in_under_a_second(app_url, api_name, make):
    for megabytes in (5, 50):
        status, text, seconds = post(app_url, api_name, make("word " * (megabytes * 200_000)))
        assert status in (413, 422) and seconds < 1.0, (status, seconds)
        assert "characters" in text and "shorten" in text
    serves(app_url)


def test_an_input_at_the_limit_is_answered_with_a_bounded_response(client, app_url):
    text = ("Anna works at Acme Corp in Lyon. " * 4000)[: limits.max_input_chars()]
    result, error, seconds = timed(client.predict, text, "diffllama-tag", "llama-tag", api_name="/tag")
    assert error is None and seconds < 30
    assert len(json.dumps(result, default=str)) < 12 * len(text)  # the text comes back once or twice, marked up
    serves(app_url)


def test_a_prompt_past_the_model_positions_is_refused_at_once(client, app_url):
    prompt = "a " * 20_000  # 20,000 tokens for a 512-position model
    _, error, seconds = timed(client.predict, prompt, 8, True, 0.8, 0.95, 0, "diffllama-lm", "llama-lm",
                              api_name="/generate")
    assert "trained on 512 positions" in error and "shorten the prompt" in error and seconds < 5
    serves(app_url)


def test_a_continuation_stops_at_the_model_positions_and_says_so(client):
    records = client.predict("a " * 500, 64, True, 0.8, 0.95, 0, "diffllama-lm", "llama-lm", api_name="/generate")[-1]
    for slot in ("A", "B"):
        assert records[slot]["positions_limit"] == 512 and len(records[slot]["token_ids"]) <= 512


def test_odd_inputs_each_get_one_clear_message(app_url, client):
    status, text, _ = post(app_url, "classify", ["Bob \ud800 met Clara", *CLASSIFY])
    assert status == 422 and "invalid character (U+D800" in text
    with pytest.raises(Exception, match="the text is empty"):
        client.predict(None, *CLASSIFY, api_name="/classify")
    assert classify(client, 12345)  # a number is read as its text
    serves(app_url)


def test_an_unexpected_error_gives_a_request_id_that_the_log_shows_with_its_traceback(client, monkeypatch, caplog):
    def broken(source, task):
        raise RuntimeError("internal detail /srv/secret/path")

    classify(client)  # loads the models, so the validator passes
    monkeypatch.setattr(common.CACHE, "get", broken)
    with caplog.at_level(logging.INFO, logger="diffllama_lens"), pytest.raises(Exception) as error:
        classify(client)
    message = str(error.value)
    assert "Something went wrong on the server (request " in message and "/srv/secret" not in message
    request_id = message.split("(request ")[1][:8]
    logged = [r for r in caplog.records if request_id in r.getMessage()]
    assert logged and logged[0].exc_info is not None


def test_a_request_past_the_time_limit_is_stopped(app_url, client, monkeypatch):
    monkeypatch.setenv(limits.SECONDS_ENV, "0")
    _, error, seconds = timed(classify, client)
    assert "ran past the server's limit of 0 s per request" in error and seconds < 5
    monkeypatch.delenv(limits.SECONDS_ENV)
    serves(app_url)


# --- fair queues ----------------------------------------------------------------------------------
def test_one_session_flooding_the_queue_does_not_starve_others(app_url):
    flooder = Client(app_url, verbose=False)
    jobs = [flooder.submit("Anna walked to", 200, True, 0.8, 0.95, 0, "diffllama-lm", "llama-lm", api_name="/generate")
            for _ in range(20)]  # standing for 500: every job past the cap is refused the same way
    refused = 0
    for job in jobs:
        try:
            job.result(timeout=120)
        except Exception as error:  # noqa: BLE001
            refused += "requests waiting or running" in str(error)
    assert refused >= 20 - common.MAX_QUEUED_PER_SESSION
    serves(app_url)


def test_api_calls_without_a_session_are_capped_per_address(app_url, app_demo):
    def call(_):  # each such call gets a session of its own, so they are counted per client address
        return httpx.post(app_url + "gradio_api/call/generate", timeout=30,
                          json={"data": ["Anna walked to", 200, True, 0.8, 0.95, 0, "diffllama-lm", "llama-lm"]}).status_code

    with ThreadPoolExecutor(20) as pool:
        codes = list(pool.map(call, range(20)))  # standing for 500, never read back
    queue = app_demo._queue
    anonymous = [e for e in [*queue.event_queue_per_concurrency_id[common.MODEL_QUEUE].queue,
                             *(e for job in queue.active_jobs if job for e in job)] if e.session_hash == e._id]
    assert len(anonymous) <= common.MAX_QUEUED_PER_SESSION and codes.count(422) >= 10, codes
    _, _, seconds = timed(serves, app_url)
    assert seconds < 60


# --- views never show a stale run -----------------------------------------------------------------
def test_after_a_failed_or_refused_run_the_views_have_no_run(client):
    classify(client)
    for bad in (("   ", *CLASSIFY), ("Bob", "/etc", "llama-cls")):  # fails while running / refused before
        with pytest.raises(Exception):
            client.predict(*bad, api_name="/classify")
        with pytest.raises(Exception, match="the tab's last run failed"):
            client.predict("A", 0, 0, "diff", 64, api_name="/classify_attention")
    classify(client)
    assert client.predict("A", 0, 0, "diff", 64, api_name="/classify_attention")


def test_qa_on_long_contexts_measures_each_model_in_its_own_best_window(client):
    for seed in range(12):  # ≈ 9 KB contexts: several 512-token windows each
        cities = [f"city{(seed * 7 + i) % 97}" for i in range(130)]
        context = " ".join(f"The magic number of {c} is {1000 + 31 * i + seed}. A bus passed by." for i, c in enumerate(cities))
        result = client.predict(f"What is the magic number of {cities[seed * 9]}?", context, 3, "diffllama-qa",
                                "llama-qa", api_name="/answer")
        assert result is not None
        run = run_store.current(type("R", (), {"session_hash": client.session_hash})(), "qa")
        assert all(trace.seq_len <= 512 for trace in run.traces.values())  # one window kept per model
        assert set(run.traces) == {"A", "B"}


# --- disk -----------------------------------------------------------------------------------------
def test_views_write_nothing_to_disk_and_exports_go_to_one_cleaned_folder(client, app_demo):
    classify(client)
    before = sum(len(files) for files in app_demo.temp_file_sets)
    exports = set(common.EXPORTS.rglob("*")) if common.EXPORTS.exists() else set()
    for layer in range(20):
        client.predict("A", layer % 3, 0, "diff", 64, api_name="/classify_attention")
    assert sum(len(files) for files in app_demo.temp_file_sets) == before
    assert (set(common.EXPORTS.rglob("*")) if common.EXPORTS.exists() else set()) == exports
    exported = client.predict("A", 0, 0, "diff", 64, api_name="/classify_export")
    assert "/" not in exported.rsplit("attention", 1)[-1] and exported.endswith(".csv")
    common.remove_exports()  # what the process does at exit; gradio's own copies go with delete_cache
    assert not common.EXPORTS.exists()
    assert app_demo.delete_cache


def test_uploads_are_refused(app_url):
    response = httpx.post(app_url + "gradio_api/upload", files={"files": ("big.bin", b"x" * 100_000)}, timeout=30)
    assert response.status_code == 413
    serves(app_url)


# --- loading --------------------------------------------------------------------------------------
def test_sources_outside_the_allow_list_get_one_message_through_the_api(client):
    messages = set()
    for probe in ("/etc", "/proc/self", "/definitely/missing", "etc", "tests", "owner/model"):
        _, error, seconds = timed(client.predict, "Bob", probe, "llama-cls", api_name="/classify")
        assert seconds < 2
        messages.add(error.split("\n")[-1].replace(repr(probe), "SOURCE"))
    assert len(messages) == 1 and "is not a model this server loads" in messages.pop()


def test_one_checkpoint_typed_many_ways_is_loaded_once(client, bundle):
    classify(client)
    loaded = len(common.CACHE)
    for spelling in (f"{bundle}/diffllama-cls/././.", f"{bundle}/diffllama-cls/../diffllama-cls", f"{bundle}//diffllama-cls"):
        client.predict("Bob met Clara.", spelling, "llama-cls", api_name="/classify")
    assert len(common.CACHE) == loaded


class SlowHub(http.server.BaseHTTPRequestHandler):
    """A hub that answers every request late (and then with nothing)."""

    delay = 3.0

    def do_GET(self):  # noqa: N802 - http.server's naming
        time.sleep(self.delay)
        self.send_error(404)

    do_HEAD = do_GET

    def log_message(self, *args):
        pass


def test_a_slow_hub_never_holds_the_model_queue(app_url, monkeypatch):
    hub = http.server.ThreadingHTTPServer(("127.0.0.1", 0), SlowHub)
    threading.Thread(target=hub.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{hub.server_port}"
    monkeypatch.setattr(loading.hub_constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(loading.hub_constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(loading, "_PROBE", {"at": float("-inf"), "ok": False})
    monkeypatch.setenv("DIFFLLAMA_LENS_HUB_MODELS", "slow/*")
    monkeypatch.setattr(common.CACHE, "load_seconds", 1.0)  # standing for 30 s
    try:
        def load_slow(i):
            return timed(Client(app_url, verbose=False).predict, "Bob", f"slow/model-{i}", "llama-cls", api_name="/classify")

        with ThreadPoolExecutor(6) as pool:
            slow = [pool.submit(load_slow, i) for i in range(2)]
            time.sleep(0.3)
            others = [timed(classify, Client(app_url, verbose=False)) for _ in range(3)]
            loads = [f.result() for f in slow]
        assert all(error is None and seconds < 5 for _, error, seconds in others), others
        assert all("still loading after 1 s" in error and seconds < 5 for _, error, seconds in loads), loads
    finally:
        monkeypatch.setattr(SlowHub, "delay", 0.0)
        deadline = time.time() + 30
        while common.CACHE._loading and time.time() < deadline:  # the loads go on; let them end against this hub
            time.sleep(0.2)
        hub.shutdown()


def test_a_typed_model_loads_in_its_own_lane_with_the_main_button_disabled_meanwhile(app_demo):
    loads = [fn for fn in app_demo.fns.values() if fn.concurrency_id == common.LOAD_QUEUE]
    assert len(loads) == 8  # two slots in each of the four tabs, none in the model queue
    for load in loads:
        button = next(c for c in load.outputs if c.get_block_name() == "button")
        disables = [fn for fn in app_demo.fns.values() if button in fn.outputs and not fn.queue]
        assert disables  # a queue-free step disables the button before the load starts
    previous, kept, info, button_update = common.load_slot("classification")("/etc", "diffllama-cls")
    assert (previous, kept) == ("diffllama-cls", "diffllama-cls") and button_update["interactive"] is True
