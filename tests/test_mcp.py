"""The MCP server: absent unless DIFFLLAMA_LENS_MCP=1; then the stateless endpoints are its tools, each
parameter described from the docstring, and a tool called through MCP returns the backend's numbers."""

import ast
import asyncio

import httpx
import numpy as np
import pytest
from gradio_client import Client
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from components import server
from diffllama import analysis
from diffllama.analysis import allocation
from diffllama.registry import ModelCache

TOOLS = {"attention_map", "attention_region", "attention_to_span", "set_lambdas", "ablate_heads", "head_ablation_map",
         "patch_activations", "logit_lens", "compare_quantized"}
TEXT = "The magic number of Lyon is 4821. What is the magic number of Lyon?"
QUESTION, CONTEXT = "What is the magic number of Lyon?", "The magic number of Paris is 4341. The magic number of Lyon is 6087."


@pytest.fixture(scope="module")
def mcp_url(app_demo):  # after app_demo: the tiny bundle is the app's bundled models
    import app

    with pytest.MonkeyPatch.context() as env:
        env.setenv(server.MCP_ENV, "1")
        demo = app.build()
        demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=None, quiet=True,
                    **app.launch_settings())
    yield demo.local_url
    demo.close()


def test_without_the_setting_there_is_no_mcp_server(app_url):
    for path in ("gradio_api/mcp/schema", "gradio_api/mcp/"):
        assert httpx.get(app_url + path, timeout=30).status_code == 404


def test_the_tools_are_the_stateless_endpoints_each_parameter_described(mcp_url):
    schema = httpx.get(mcp_url + "gradio_api/mcp/schema", timeout=30)
    assert schema.status_code == 200
    tools = {tool["name"]: tool for tool in schema.json()}
    assert set(tools) == TOOLS  # no tab endpoint: those read the session's last run
    for tool in tools.values():
        assert "Returns:" in tool["description"]
        parameters = tool["inputSchema"]["properties"]
        assert parameters and all(p["description"] for p in parameters.values()), tool["name"]


def test_the_session_bound_endpoints_stay_callable_through_the_api(mcp_url):
    client = Client(mcp_url, verbose=False)
    client.predict("It was not bad at all.", "diffllama-cls", "llama-cls", api_name="/classify")
    _, map_a, map_b, *_ = client.predict("A", 1, 0, "diff", 64, "weight", api_name="/classify_attention")  # this session's run
    assert map_a["type"] == "plotly" and map_b is None


async def call_tools(url: str, calls: list[tuple[str, dict]]) -> list:
    """Each call's result through an MCP client session, as the client sees it."""
    async with streamable_http_client(url + "gradio_api/mcp/") as (read, write, *_):
        async with ClientSession(read, write) as session:
            await session.initialize()
            assert {tool.name for tool in (await session.list_tools()).tools} == TOOLS
            return [await session.call_tool(name, arguments) for name, arguments in calls]


def test_which_heads_attend_to_the_answer_through_mcp_equals_the_backend(mcp_url):
    asked = [("attention_to_span", dict(text=TEXT, text_pair="", source="diffllama-lm", task="generation", span="4821")),
             ("attention_to_span", dict(text=QUESTION, text_pair=CONTEXT, source="llama-qa", task="qa", span="6087")),
             ("attention_to_span", dict(text=TEXT, text_pair="", source="diffllama-lm", task="generation", span="9999")),
             ("attention_to_span", dict(text=TEXT, text_pair="", source="diffllama-lm", task="generation", span=" "))]
    lm, qa, missing, empty = asyncio.run(call_tools(mcp_url, asked))
    cache = ModelCache()
    for result, (text, pair, source, task, sequence) in ((lm, (TEXT, None, "diffllama-lm", "generation", 0)),
                                                          (qa, (QUESTION, CONTEXT, "llama-qa", "qa", 1))):
        assert not result.isError
        got = ast.literal_eval(result.content[0].text)  # gradio sends a tool's dict as its Python literal
        trace = cache.get(source, task).trace(text, pair)
        span = "4821" if sequence == 0 else "6087"
        expected = analysis.reference_allocation(trace, analysis.find_reference(pair or text, span, sequence, "marked span"))
        start, end = expected.answer
        assert got["span_tokens"] == [start, end] and "".join(got["span_token_texts"]).strip() == span
        assert got["kind"] == trace.kinds[0] and got["query"]["position"] == trace.seq_len - 1
        for reading in analysis.READINGS:
            for key, mass in (("attention_to_span", expected.answer_mass), ("attention_noise", expected.noise_mass)):
                values = np.array([[np.nan if v is None else v for v in heads] for heads in got[key][reading]])
                np.testing.assert_allclose(values, mass[reading], atol=1e-6)
        best = got["top_heads"][0]
        assert best["attention_to_span"] == pytest.approx(expected.answer_mass[got["default_reading"]].max(), abs=1e-6)
        assert set(got["definitions"]) >= {"attention to answer", "attention noise", "net reading", "query token", "context"}
        assert (got["lambdas"] is None) == (trace.lambdas is None)
    assert missing.isError and "'9999' does not occur in the input" in missing.content[0].text
    assert empty.isError and "span: give the text to measure" in empty.content[0].text


def test_one_prompt_gives_one_allocation_in_the_compare_view_the_api_mcp_and_the_study(mcp_url):
    """The same retrieval prompt, span and context: the backend call the Generation compare view makes (on
    the prompt and the model's own continuation), ``/attention_to_span``, its MCP tool and the study."""
    from diffllama.study import Example
    from diffllama.study.measure import measure, prompt

    context = "The magic number of Paris is 4341. The magic number of Lyon is 4821. A bus passed by slowly."
    start = context.index("4821")
    example = Example(context, "What is the magic number of Lyon?", start, start + 4, 0.5, "The magic number of Lyon is")
    text = prompt(example)
    lens = ModelCache().get("diffllama-lm", "generation")
    stream = lens.generate(text, max_new_tokens=6, greedy=True)
    list(stream)
    generated = stream.result
    reference = analysis.find_reference(text, "4821", 0, "gold answer")
    view = analysis.reference_allocation(generated.trace, reference, (0, len(context)), text=text + generated.text,
                                         prompt_tokens=generated.prompt_length)
    assert view.query == generated.prompt_length - 1  # the continuation does not say 4821 later on
    asked = dict(text=text, text_pair="", source="diffllama-lm", task="generation", span="4821", kind="", context=context, query=-1)
    api = Client(mcp_url, verbose=False).predict(*asked.values(), api_name="/attention_to_span")
    [tool] = asyncio.run(call_tools(mcp_url, [("attention_to_span", asked)]))
    assert not tool.isError
    tool = ast.literal_eval(tool.content[0].text)
    study = measure(lens, example, 0, None)
    assert api["query"]["position"] == tool["query"]["position"] == study.query == view.query
    assert api["context_tokens"] == list(view.context) and api["context_rule"] == "the context's characters"
    for reading in analysis.READINGS:
        for which, got_key, mass in (("answer", "attention_to_span", view.answer_mass), ("noise", "attention_noise", view.noise_mass)):
            expected = mass[reading].mean(axis=1)  # per layer, mean over heads
            for got in (api[got_key][reading], tool[got_key][reading]):
                per_layer = np.array([[np.nan if v is None else v for v in heads] for heads in got]).mean(axis=1)
                np.testing.assert_allclose(per_layer, expected, atol=1e-6, err_msg=f"{which} {reading}")
            from_study = np.array([np.nan if v is None else v for v in getattr(study, which)[reading]])
            np.testing.assert_allclose(from_study, expected, atol=1e-6, err_msg=f"study {which} {reading}")
    assert api["table"]["rows"] == [[cell for cell in row] for row in analysis.allocation_table(
        {"diffllama-lm (diffllama)": view}).rows]


def test_a_continuation_is_measured_as_the_generation_compare_view_measures_it(mcp_url):
    """A prompt and a continuation of it: the backend call the Generation compare view makes (on the trace
    generation made), ``/attention_to_span`` and its MCP tool given the continuation — one allocation; by
    default measured from the token before the answer where the continuation says it."""
    context = "The magic number of Paris is 4341. The magic number of Lyon is 4821. A bus passed by slowly."
    text = context + " What is the magic number of Lyon? The magic number of Lyon is"
    lens = ModelCache().get("diffllama-lm", "generation")
    stream = lens.generate(text, max_new_tokens=6, greedy=True)
    list(stream)
    generated = stream.result
    reference = analysis.find_reference(text, "4821", 0, "gold answer")
    said = " it is 4821."  # a continuation that says the answer, traced as generation traces its own tokens
    cases = [(generated.text, generated.trace, generated.prompt_length),
             (said, *lens.trace_continuation(text, said))]
    for continuation, trace, prompt_tokens in cases:
        assert trace.seq_len > prompt_tokens  # a continuation was traced after the prompt
        view = analysis.reference_allocation(trace, reference, (0, len(context)), text=text + continuation,
                                             prompt_tokens=prompt_tokens)
        asked = dict(text=text, text_pair="", source="diffllama-lm", task="generation", span="4821", kind="",
                     context=context, query=-1, continuation=continuation)
        api = Client(mcp_url, verbose=False).predict(*asked.values(), api_name="/attention_to_span")
        [tool] = asyncio.run(call_tools(mcp_url, [("attention_to_span", asked)]))
        assert not tool.isError, tool.content[0].text
        tool = ast.literal_eval(tool.content[0].text)
        assert api["query"] == tool["query"] == {"position": view.query, "token": view.query_token, "rule": view.query_rule}
        for reading in analysis.READINGS:
            for key, mass in (("attention_to_span", view.answer_mass), ("attention_noise", view.noise_mass)):
                for got in (api[key][reading], tool[key][reading]):
                    got = np.array([[np.nan if v is None else v for v in heads] for heads in got], dtype=float)
                    np.testing.assert_allclose(got, mass[reading], atol=1e-6, err_msg=f"{key} {reading}")
    answer_at = len(text) + said.index("4821")
    assert view.query_rule == allocation.BEFORE_ANSWER and trace.offsets[view.query + 1][1] > answer_at >= trace.offsets[view.query][1]
    assert view.query >= prompt_tokens  # in the continuation, not the prompt's last token
