"""What strangers can do to a public server, each through the API as a visitor would: what they get,
and that the next visitor is still served. Small sizes stand for big ones where a limit makes them
equivalent (a run store of a few runs for 2 GB, 20 queued jobs for 500). Behaviour only — refused,
served, in which order; how fast is measured by ``benchmarks/load_test.py --targets``. Timeouts here
only catch a hang."""

import concurrent.futures
import http.server
import json
import logging
import re
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from gradio_client import Client

from components import exports, model_queue, model_slots, run_store
from diffllama import limits, loading, tasks

CLASSIFY = ("diffllama-cls", "llama-cls")


@pytest.fixture
def client(app_url):
    return Client(app_url, verbose=False)


def outcome(fn, *args, **kwargs):
    """(result, None) or (None, the error's message)."""
    try:
        return fn(*args, **kwargs), None
    except Exception as error:  # noqa: BLE001 - the refusal is what is checked
        return None, str(error)


def classify(client, text="Bob met Clara in Lyon."):
    return client.predict(text, *CLASSIFY, api_name="/classify")


def serves(app_url):
    """A fresh visitor is answered."""
    result, error = outcome(classify, Client(app_url, verbose=False))
    assert error is None and result, error


def post(app_url, api_name, data, session="hostile", address=None):
    """A raw API call, as any HTTP client can send it (gradio_client refuses to encode some inputs),
    from ``address`` (as a proxy on this machine reports it: uvicorn trusts X-Forwarded-For from
    127.0.0.1): (status, answer)."""
    body = json.dumps({"data": data, "session_hash": session})
    headers = {"Content-Type": "application/json", **({"X-Forwarded-For": address} if address else {})}
    response = httpx.post(app_url + "gradio_api/call/" + api_name, content=body, headers=headers, timeout=120)
    return response.status_code, response.text


# --- memory held for visitors ---------------------------------------------------------------------
def test_runs_are_held_within_the_bound_and_an_evicted_run_says_so(app_url, monkeypatch):
    store = run_store.RunStore(max_bytes=1e12, ttl_s=3600)
    monkeypatch.setattr(run_store, "STORE", store)  # only this test's runs
    visitors = [Client(app_url, verbose=False) for _ in range(4)]
    classify(visitors[0], "word " * 150)
    per_run = store.nbytes
    store.max_bytes = 2.5 * per_run  # two runs fit, like 2 GB of long runs
    for visitor in visitors:
        classify(visitor, "word " * 150)
    assert store.nbytes <= 2.5 * per_run
    _, error = outcome(visitors[0].predict, "A", 0, 0, "diff", 64, api_name="/classify_attention")
    assert "this run has expired; run the tab again" in error
    assert visitors[3].predict("A", 0, 0, "diff", 64, api_name="/classify_attention")  # the newest is kept
    classify(visitors[0])
    assert visitors[0].predict("A", 0, 0, "diff", 64, api_name="/classify_attention")


def test_idle_runs_expire_and_a_closed_page_frees_its_runs(app_url, monkeypatch):
    idle, leaving = Client(app_url, verbose=False), Client(app_url, verbose=False)
    classify(idle)
    monkeypatch.setattr(run_store.STORE, "ttl_s", 0.0)  # sessions opened over plain HTTP never unload
    run_store.STORE.sweep()
    _, error = outcome(idle.predict, "A", 0, 0, "diff", 64, api_name="/classify_attention")
    assert "this run has expired" in error
    monkeypatch.setattr(run_store.STORE, "ttl_s", 3600.0)
    classify(leaving)
    sessions = lambda: {session for session, _ in run_store.STORE._entries}  # noqa: E731
    assert leaving.session_hash in sessions()
    ended, end_session = threading.Event(), run_store.STORE.end_session

    def ending(session):  # the unload runs when gradio sees the stream close: the test waits for it, not for a time
        end_session(session)
        if session == leaving.session_hash:
            ended.set()

    monkeypatch.setattr(run_store.STORE, "end_session", ending)
    # a browser keeps a heartbeat stream open; closing it (the page) runs demo.unload
    with httpx.stream("GET", f"{app_url}gradio_api/heartbeat/{leaving.session_hash}", timeout=10) as stream:
        next(stream.iter_lines())
    assert ended.wait(120)  # only a hang's bound
    assert leaving.session_hash not in sessions()


# --- input sizes ----------------------------------------------------------------------------------
@pytest.mark.parametrize("api_name, make", [
    ("answer", lambda text: ["What is it?", text, 3, "diffllama-qa", "llama-qa"]),
    ("classify", lambda text: [text, *CLASSIFY]),
    ("tag", lambda text: [text, "diffllama-tag", "llama-tag"]),
])
def test_huge_inputs_are_refused_unread(app_url, api_name, make):
    for megabytes in (5, 50):  # how fast: benchmarks/load_test.py --targets
        status, text = post(app_url, api_name, make("word " * (megabytes * 200_000)))
        assert status in (413, 422), status
        assert "characters" in text and "shorten" in text
    serves(app_url)


@pytest.mark.parametrize("api_name, make, what, reads", [
    ("tag", lambda text: [text, "diffllama-tag", "llama-tag"], "text", 512),
    ("classify", lambda text: [text, *CLASSIFY], "text", 512),
    ("generate", lambda text: [text, 8, True, 0.8, 0.95, 0, "diffllama-lm", "llama-lm"], "prompt", 511),
    ("attention_map", lambda text: [text, "", "diffllama-cls", "classification", 0, 0, "diff", 64, "weight"], "text", 512),
])
def test_an_input_past_the_model_positions_is_refused_before_any_trace(client, app_url, monkeypatch, api_name, make, what, reads):
    traced = []
    monkeypatch.setattr(loading, "run_trace", lambda *args: traced.append(args))
    for text in ("a" + "\u0301" * 5_000, ("Anna works at Acme Corp in Lyon. " * 4000)[: limits.max_input_chars()]):
        _, error = outcome(client.predict, *make(text), api_name=f"/{api_name}")  # how fast: benchmarks/load_test.py --targets
        assert re.search(rf"the {what} is [\d,]+ tokens; \S+ was trained on 512 positions, so it reads at most {reads} tokens", error), error
        assert f"shorten the {what} to about" in error
    assert not traced
    monkeypatch.undo()
    serves(app_url)


def test_a_continuation_stops_at_the_model_positions_and_says_so(client):
    records = client.predict("a " * 500, 64, True, 0.8, 0.95, 0, "diffllama-lm", "llama-lm", api_name="/generate")[-1]
    for slot in ("A", "B"):
        assert records[slot]["positions_limit"] == 512 and len(records[slot]["token_ids"]) <= 512


def test_odd_inputs_each_get_one_clear_message(app_url, client):
    status, text = post(app_url, "classify", ["Bob \ud800 met Clara", *CLASSIFY])
    assert status == 422 and "invalid character (U+D800" in text
    with pytest.raises(Exception, match="the text is empty"):
        client.predict(None, *CLASSIFY, api_name="/classify")
    assert classify(client, 12345)  # a number is read as its text
    serves(app_url)


def test_an_unexpected_error_gives_a_request_id_that_the_log_shows_with_its_traceback(client, monkeypatch, caplog):
    def broken(source, task):
        raise RuntimeError("internal detail /srv/secret/path")

    classify(client)  # loads the models, so the validator passes
    monkeypatch.setattr(model_slots.CACHE, "get", broken)
    with caplog.at_level(logging.INFO, logger="diffllama_lens"), pytest.raises(Exception) as error:
        classify(client)
    message = str(error.value)
    assert "Something went wrong on the server (request " in message and "/srv/secret" not in message
    request_id = message.split("(request ")[1][:8]
    logged = [r for r in caplog.records if request_id in r.getMessage()]
    assert logged and logged[0].exc_info is not None


def test_a_request_past_the_time_limit_is_stopped(app_url, client, monkeypatch):
    monkeypatch.setenv(limits.SECONDS_ENV, "0")
    _, error = outcome(classify, client)
    assert "ran past the server's limit of 0 s per request" in error
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
    assert refused >= 20 - model_queue.MAX_QUEUED_PER_SESSION
    serves(app_url)


def test_api_calls_without_a_session_are_capped_per_address(app_url, app_demo):
    def call(_):  # each such call gets a session of its own, so they are counted per client address
        return httpx.post(app_url + "gradio_api/call/generate", timeout=30,
                          json={"data": ["Anna walked to", 200, True, 0.8, 0.95, 0, "diffllama-lm", "llama-lm"]}).status_code

    with ThreadPoolExecutor(20) as pool:
        codes = list(pool.map(call, range(20)))  # standing for 500, never read back
    queue = app_demo._queue
    anonymous = [e for e in [*queue.event_queue_per_concurrency_id[model_queue.MODEL_QUEUE].queue,
                             *(e for job in queue.active_jobs if job for e in job)] if e.session_hash == e._id]
    assert len(anonymous) <= model_queue.MAX_QUEUED_PER_SESSION and codes.count(422) >= 10, codes
    serves(app_url)


def test_many_sessions_from_one_address_are_capped_and_another_address_goes_first(app_url, app_demo, monkeypatch):
    held = threading.Event()  # the flood's runs wait here, so what is queued stays queued while the test counts
    running = threading.Semaphore(0)  # one release per flood run that has started
    original = loading.LensModel.generate

    def held_generate(self, *args, **kwargs):
        running.release()
        held.wait(120)  # only a hang's bound: the test releases them
        return original(self, *args, **kwargs)

    monkeypatch.setattr(loading.LensModel, "generate", held_generate)
    generate = next(fn for fn in app_demo.fns.values() if fn.api_name == "generate")

    def join(session, address):  # a browser's join, with a session hash made up for each
        body = {"data": ["Anna walked to", 200, True, 0.8, 0.95, 0, "diffllama-lm", "llama-lm"],
                "fn_index": generate._id, "session_hash": session, "event_data": None, "trigger_id": None}
        return httpx.post(app_url + "gradio_api/queue/join", json=body, headers={"X-Forwarded-For": address}, timeout=120)

    try:
        flood = [join(f"made-up-{i}", "203.0.113.7") for i in range(3 * model_queue.MAX_QUEUED_PER_ADDRESS)]
        accepted = [r for r in flood if r.status_code == 200]
        refused = [r for r in flood if r.status_code == 422]
        assert len(accepted) == model_queue.MAX_QUEUED_PER_ADDRESS and len(refused) == len(flood) - len(accepted)
        assert all("your address already has" in r.text for r in refused)
        assert [r.status_code for r in flood[:model_queue.MAX_QUEUED_PER_ADDRESS]] == [200] * model_queue.MAX_QUEUED_PER_ADDRESS
        for _ in range(model_queue.MODEL_CONCURRENCY):  # the flood's first runs hold the model slots (on a busy
            assert running.acquire(timeout=120)  # machine they start late: until then they are waiting too)
        status, text = post(app_url, "classify", ["Bob met Clara.", *CLASSIFY], session=None, address="198.51.100.9")
        assert status == 200, text  # another address joins while the flooding one is at its cap, ...
        waiting = [model_queue.event_address(e) for e in app_demo._queue.event_queue_per_concurrency_id[model_queue.MODEL_QUEUE].queue]
        assert waiting[0] == "198.51.100.9" and set(waiting[1:]) == {"203.0.113.7"}  # ... goes first of those waiting ...
    finally:
        held.set()
    event = json.loads(text)["event_id"]
    answer = httpx.get(f"{app_url}gradio_api/call/classify/{event}", timeout=120).text
    assert "event: complete" in answer  # ... and is served


def test_the_client_address_behind_a_proxy_is_the_one_the_proxy_adds(monkeypatch):
    monkeypatch.setattr(model_queue, "PROXY_HOPS", 0)  # no proxy: the connection's peer (uvicorn's reading)
    assert model_queue.client_address("192.0.2.1", "6.6.6.6") == "192.0.2.1"
    monkeypatch.setattr(model_queue, "PROXY_HOPS", 1)  # a Space: the last entry is the proxy's; earlier ones are the client's own
    assert model_queue.client_address("10.16.3.80", "6.6.6.6, 198.51.100.9") == "198.51.100.9"
    assert model_queue.client_address("10.16.3.80", None) == "10.16.3.80"


def test_text_that_expands_into_many_tokens_is_refused_before_any_trace(client, app_url, monkeypatch):
    traced = []
    monkeypatch.setattr(loading.LensModel, "trace", lambda self, *a, **k: traced.append(a))
    monkeypatch.setattr(loading.LensModel, "answer", lambda self, *a, **k: traced.append(a))
    for context in ("😀" * 10_000, "e" + "\u0301" * 5_000):  # characters well within the limit, tokens not
        assert len(context) < limits.max_input_chars()
        _, error = outcome(client.predict, "What is it?", context, 3, "diffllama-qa", "llama-qa", api_name="/answer")
        assert "tokens for diffllama-qa" in error and f"at most {limits.max_tokens():,} tokens" in error, error
        assert "to about" in error
    assert not traced
    monkeypatch.undo()
    serves(app_url)


def test_a_long_qa_context_is_refused_by_its_windows_before_any_trace(checkpoint, monkeypatch):
    qa = loading.load(str(checkpoint("llama-gqa", "qa")), task="qa")
    monkeypatch.setenv(limits.TOKENS_ENV, "1024")  # two windows of 512
    monkeypatch.setattr(tasks, "trace_encoding", lambda *args: pytest.fail("traced"))
    with pytest.raises(ValueError, match=r"the context is [\d,]+ tokens read in \d+ windows of 512; this server runs at most 1,024"):
        qa.answer("Where?", "Bob met Clara in Lyon. " * 150)


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
    files = set(exports.EXPORTS.rglob("*")) if exports.EXPORTS.exists() else set()
    for layer in range(20):
        client.predict("A", layer % 3, 0, "diff", 64, api_name="/classify_attention")
    assert sum(len(files) for files in app_demo.temp_file_sets) == before
    assert (set(exports.EXPORTS.rglob("*")) if exports.EXPORTS.exists() else set()) == files
    exported = client.predict("A", 0, 0, "diff", 64, api_name="/classify_export")
    assert "/" not in exported.rsplit("attention", 1)[-1] and exported.endswith(".csv")
    exports.remove_exports()  # what the process does at exit; gradio's own copies go with delete_cache
    assert not exports.EXPORTS.exists()
    assert app_demo.delete_cache


def test_uploads_are_refused(app_url):
    response = httpx.post(app_url + "gradio_api/upload", files={"files": ("big.bin", b"x" * 100_000)}, timeout=30)
    assert response.status_code == 413
    serves(app_url)


# --- loading --------------------------------------------------------------------------------------
def test_sources_outside_the_allow_list_get_one_message_through_the_api(client):
    messages = set()
    for probe in ("/etc", "/proc/self", "/definitely/missing", "etc", "tests", "owner/model"):
        _, error = outcome(client.predict, "Bob", probe, "llama-cls", api_name="/classify")
        messages.add(error.split("\n")[-1].replace(repr(probe), "SOURCE"))
    assert len(messages) == 1 and "is not a model this server loads" in messages.pop()


def test_one_checkpoint_typed_many_ways_is_loaded_once(client, bundle):
    classify(client)
    loaded = len(model_slots.CACHE)
    for spelling in (f"{bundle}/diffllama-cls/././.", f"{bundle}/diffllama-cls/../diffllama-cls", f"{bundle}//diffllama-cls"):
        client.predict("Bob met Clara.", spelling, "llama-cls", api_name="/classify")
    assert len(model_slots.CACHE) == loaded


class HeldHub(http.server.BaseHTTPRequestHandler):
    """A hub that answers nothing until the test lets it (and then with nothing)."""

    reached, release = threading.Event(), threading.Event()

    def do_GET(self):  # noqa: N802 - http.server's naming
        HeldHub.reached.set()
        HeldHub.release.wait(120)  # only a hang's bound: the test releases it
        self.send_error(404)

    do_HEAD = do_GET

    def log_message(self, *args):
        pass


def test_a_slow_hub_never_holds_the_model_queue(app_url, monkeypatch):
    hub = http.server.ThreadingHTTPServer(("127.0.0.1", 0), HeldHub)
    threading.Thread(target=hub.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{hub.server_port}"
    monkeypatch.setattr(loading.hub_constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(loading.hub_constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(loading, "_PROBE", {"at": float("-inf"), "ok": False})
    monkeypatch.setenv("DIFFLLAMA_LENS_HUB_MODELS", "slow/*")
    monkeypatch.setattr(model_slots.CACHE, "load_seconds", 1.0)  # standing for 30 s
    HeldHub.reached.clear(), HeldHub.release.clear()
    try:
        with ThreadPoolExecutor(2) as pool:
            slow = [pool.submit(outcome, Client(app_url, verbose=False).predict, "Bob", f"slow/model-{i}", "llama-cls",
                                api_name="/classify") for i in range(2)]
            assert HeldHub.reached.wait(120)  # a load is waiting on the hub ...
            others = [outcome(classify, Client(app_url, verbose=False)) for _ in range(3)]
            assert not HeldHub.release.is_set()  # ... and is still waiting while the others are served
            assert all(error is None for _, error in others), others
            loads = [f.result(timeout=120) for f in slow]
        assert all("still loading after 1 s" in error for _, error in loads), loads
    finally:
        HeldHub.release.set()  # the loads go on; let them end against this hub
        concurrent.futures.wait(list(model_slots.CACHE._loading.values()), timeout=120)
        hub.shutdown()


def test_a_typed_model_loads_in_its_own_lane_with_the_main_button_disabled_meanwhile(app_demo):
    loads = [fn for fn in app_demo.fns.values() if fn.concurrency_id == model_queue.LOAD_QUEUE]
    assert len(loads) == 8  # two slots in each of the four tabs, none in the model queue
    for load in loads:
        button = next(c for c in load.outputs if c.get_block_name() == "button")
        disables = [fn for fn in app_demo.fns.values() if button in fn.outputs and not fn.queue]
        assert disables  # a queue-free step disables the button before the load starts
    previous, kept, info, button_update = model_slots.load_slot("classification")("/etc", "diffllama-cls")
    assert (previous, kept) == ("diffllama-cls", "diffllama-cls") and button_update["interactive"] is True
