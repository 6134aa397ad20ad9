"""agentbot against OpenAI-compatible servers other than OpenAI (vLLM, Ollama, llama.cpp's server,
DeepSeek, OpenRouter, Mistral, a Gemini gateway), each speaking its own wire as its documentation shows
it (:mod:`tests.fakes.compat_server`): what the operator sees must be one line naming the setting or
the server's flag to change."""

from __future__ import annotations

import io
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from agent.messages import Message
from agent.models.base import ContextOverflowError, ModelError, ModelSettings, final_response
from agent.models.openai import OpenAIChatModel
from agent.models.tokens import cut_prompt
from tests.fakes.compat_server import (
    CompatServer,
    chunk,
    remembers_task,
    said,
    sse,
    status,
    tool_call,
    whole,
)
from tests.fakes.served import served
from tests.test_blackbox_operator import agentbot


@pytest.fixture
async def server() -> AsyncIterator[CompatServer]:
    async with CompatServer() as srv:
        yield srv


def env(srv: CompatServer, **extra: str) -> dict[str, str]:
    return {"OPENAI_BASE_URL": srv.url, "AGENT_MODEL": "m", "MEMORY_ENABLED": "false"} | extra


async def test_vllm_started_without_tools_or_with_a_small_context_is_named_by_doctor_and_ask(
    server: CompatServer, tmp_path: Path
) -> None:
    # `vllm serve m` without --enable-auto-tool-choice lists m and answers a plain chat, so doctor said
    # ok; every run then failed at its first step with "this server or model may not support tools".
    server.vllm_auto_tools = False
    quick = {"ROUTER_CLASSIFIER": "heuristic", "PYTHON_SANDBOX": "off"}
    server.max_model_len = 4096  # `vllm serve m --max-model-len 4096`: runs fail after a page or two
    code, out, err = await agentbot(tmp_path, "doctor", env=env(server, **quick))
    line = next((x for x in out.splitlines() if "provider openai" in x), out + err)
    assert line.startswith("FAIL") and "m with --max-model-len 4,096" in line, out + err[-1500:]
    server.max_model_len = 32768
    code, out, err = await agentbot(tmp_path, "doctor", env=env(server, **quick))
    line = next((x for x in out.splitlines() if "provider openai" in x), out + err)
    assert line.startswith("FAIL") and "--enable-auto-tool-choice" in line, out + err[-1500:]
    assert "--tool-call-parser" in line, line
    code, out, err = await agentbot(tmp_path, "ask", "What is 2**32?", env=env(server))
    assert code == 1 and out == "", err[-1500:]
    line = next(x for x in err.splitlines() if x.startswith("error:"))
    assert "start vLLM with --enable-auto-tool-choice" in line, line
    assert "may not support tools" not in line, line


async def test_ollamas_small_context_is_named_by_doctor_and_a_prompt_it_cut_by_ask(
    server: CompatServer, tmp_path: Path
) -> None:
    # Ollama's OpenAI endpoint cuts a prompt past num_ctx (2,048 by default before 0.6) silently, oldest
    # messages first: once a tool result filled the context the task was gone, and the run went on to
    # "answer" nothing, its usage line the only trace (2,048 prompt tokens of ~4,900 sent). Doctor said
    # ok: the model is listed and takes tools; Ollama's /api/ps says it runs at 2,048 tokens.
    server.ollama_num_ctx = 2048
    quick = {"ROUTER_CLASSIFIER": "heuristic", "PYTHON_SANDBOX": "off"}
    code, out, err = await agentbot(tmp_path, "doctor", env=env(server, **quick))
    line = next((x for x in out.splitlines() if "provider openai" in x), out + err)
    assert line.startswith("FAIL") and "m with a 2,048-token context" in line, out + err[-1500:]
    assert "OLLAMA_CONTEXT_LENGTH=" in line and "the task" in line, line
    server.answers += [
        tool_call("write_file", {"path": "notes.txt", "content": "tide table row\n" * 1200}),
        remembers_task("The tide turns at 06:12.", "Hello! What would you like me to do?"),
    ]
    code, out, err = await agentbot(tmp_path, "ask", "When does the tide turn?", env=env(server))
    assert code == 0 and out == "Hello! What would you like me to do?\n", err[-1500:]
    warned = [x for x in err.splitlines() if "prompt tokens sent" in x]
    assert len(warned) == 1, err[-3000:]
    read, sent = (
        int(n.replace(",", "")) for n in re.findall(r"only ([\d,]+) of the ~([\d,]+)", warned[0])[0]
    )
    assert read == server.requests[-1]["prompt_tokens"] <= 2048 and sent > 4000, warned
    assert "OLLAMA_CONTEXT_LENGTH" in warned[0] and "num_ctx" in warned[0], warned


def test_the_thread_shows_a_cut_prompt_under_its_step_without_the_servers_markdown() -> None:
    # The bot's side of the warning above: the thread said nothing, the operator's logs only info lines.
    from agent.events import Cost, StepStarted, Usage, UsageEvent
    from bot.progress import ProgressRenderer
    from tests.test_blackbox_left import _Shown

    shown = _Shown()
    renderer = ProgressRenderer(shown)  # type: ignore[arg-type]
    renderer.feed(StepStarted(step=1, model="m"))
    warning = cut_prompt("**m**", Usage(2048, 9), [Message("user", "tide table row\n" * 1200)])
    assert warning is not None
    renderer.feed(UsageEvent(step=1, model="**m**", usage=Usage(2048, 9), cost=Cost(), warning=warning))
    assert "⚠️ \\*\\*m\\*\\* read only 2,048 of the \\~4,508 prompt tokens sent" in shown.blocks[-1], (
        shown.blocks
    )
    assert cut_prompt("m", Usage(2048, 9), [Message("user", "short")]) is None  # the counts agree
    assert cut_prompt("m", Usage(300, 9), [Message("user", "x" * 40_000)]) is None  # a cache-only count


@pytest.mark.parametrize(
    ("body", "flag"),
    [
        (  # llama-server's own error (tools/server/utils.hpp): its -c is 4,096 by default
            {
                "error": {
                    "code": 400,
                    "message": "request (5012 tokens) exceeds the available context size (4096 tokens)",
                    "type": "exceed_context_size_error",
                    "n_prompt_tokens": 5012,
                    "n_ctx": 4096,
                }
            },
            "start llama-server with a larger --ctx-size",
        ),
        (  # vLLM's, for a prompt past --max-model-len
            {
                "object": "error",
                "message": "The decoder prompt (length 5012) is longer than the maximum model length of 4096. "
                "Make sure that `max_model_len` is no smaller than the number of text tokens.",
                "type": "BadRequestError",
                "code": 400,
            },
            "start vLLM with a larger --max-model-len",
        ),
    ],
)
async def test_a_servers_own_small_context_names_the_flag_it_was_started_with(
    server: CompatServer, http: httpx.AsyncClient, body: dict[str, Any], flag: str
) -> None:
    # Both said "m: the conversation is too long for this model" at a first step of 900 tokens, for a
    # model that reads 128k: the limit is the server's, set by a flag when it was started.
    server.answers.append(status(400, body))
    model = OpenAIChatModel("m", base_url=server.url, client=http)
    with pytest.raises(ContextOverflowError) as e:
        await final_response(model, [Message("user", "When does the tide turn?")], ModelSettings())
    assert flag in e.value.message and "5012" in e.value.message, e.value.message
    assert "too long for this model" not in e.value.message, e.value.message


async def test_reasoning_streamed_apart_from_the_answer_is_charged_when_nothing_else_counts_it(
    server: CompatServer, tmp_path: Path
) -> None:
    # DeepSeek-R1 (and vLLM, llama.cpp, LM Studio with a reasoning parser) streams its thinking as
    # `reasoning_content`, OpenRouter and Ollama as `reasoning`. An attempt that broke off after 16,000
    # characters of it (a proxy's timeout) before its retry was charged 0 completion tokens, and an answer
    # without usage was estimated from its 6 characters of text: the thinking, billed as output, counted
    # nowhere. The same held for a Stop while the model thought.
    from agent.ask import ask
    from agent.config import AgentSettings

    think = "Tides follow the moon; let me check the numbers again. " * 72  # ~4,000 characters
    server.answers += [
        sse(*(chunk({"reasoning_content": think}) for _ in range(4)), done=False),
        sse(
            chunk({"reasoning": think}),
            chunk({"reasoning": think}),
            chunk({"content": "Tides."}),
            chunk({}, "stop"),
        ),
    ]
    settings = AgentSettings(  # type: ignore[call-arg]
        OPENAI_BASE_URL=server.url, AGENT_MODEL="m", DATA_DIR=str(tmp_path), MEMORY_ENABLED=False
    )
    out, err = io.StringIO(), io.StringIO()
    result = await ask("Why do tides rise?", settings, out=out, err=err)
    assert out.getvalue() == "Tides.\n" and len(server.requests) == 2, err.getvalue()[-2000:]
    assert "Tides follow" not in out.getvalue() + err.getvalue()  # thinking is never shown
    used = result.usage
    assert used.estimated and used.completion_tokens >= 6 * len(think) // 4, used
    assert used.reasoning_tokens >= 2 * len(think) // 4, used  # the answered call's thinking, shown apart


async def test_a_gemini_gateway_that_drops_alt_sse_answers_with_its_json_array(
    http: httpx.AsyncClient,
) -> None:
    # streamGenerateContent without ?alt=sse answers a JSON array of the chunks (Google's default), as a
    # gateway that drops the query gets; read as events it failed five times as "could not be reached
    # (SSEError): check GEMINI_BASE_URL", for a server that had answered.
    from agent.models.gemini import GeminiModel

    asked: list[str] = []

    async def generate(request: web.Request) -> web.Response:
        asked.append(request.path_qs)
        if request.query.get("page"):  # a captive portal's page, said to be HTML
            return web.Response(text="<html><title>Sign in</title></html>", content_type="text/html")
        text = {"parts": [{"text": "Tides "}], "role": "model"}
        last = {"parts": [{"text": "rise."}], "role": "model"}
        usage = {"promptTokenCount": 10, "candidatesTokenCount": 3, "totalTokenCount": 13}
        return web.json_response(
            [
                {"candidates": [{"content": text}]},
                {"candidates": [{"content": last, "finishReason": "STOP"}], "usageMetadata": usage},
            ]
        )

    app = web.Application()
    app.router.add_post("/v1beta/models/{call}", generate)
    async with served(app) as site:
        model = GeminiModel("gemini-2.5-flash", base_url=f"{site}/v1beta", api_key="k", client=http)
        said = await final_response(
            model, [Message("user", "Why do tides rise?")], ModelSettings(stream=True)
        )
        assert said is not None and said.message.content == "Tides rise.", said
        assert (said.usage.prompt_tokens, said.usage.completion_tokens, said.finish_reason) == (10, 3, "stop")
        page = GeminiModel("gemini-2.5-flash", base_url=f"{site}/v1beta?page=1", api_key="k", client=http)
        with pytest.raises(ModelError) as e:  # a web page: at once, naming the base URL, not "reached"
            await final_response(page, [Message("user", "hi")], ModelSettings(stream=True))
        assert "GEMINI_BASE_URL" in e.value.message and "could not be reached" not in e.value.message, e.value
    assert len(asked) == 2, asked


async def test_tool_call_ids_are_sent_as_mistral_takes_them_and_still_pair(
    server: CompatServer, tmp_path: Path
) -> None:
    # Mistral's API (and vLLM or mlx-lm with Mistral's templates) takes only ids of 9 letters and digits:
    # a run whose calls came without ids (ours, call_2_0) or from another provider (OpenAI's 29
    # characters, after a fallback or in a thread begun on another model) failed at its next step with
    # "apparently over tool calling (HTTP 400): this server or model may not support tools".
    from agent.ask import ask
    from agent.config import AgentSettings

    server.mistral_ids = True
    server.answers += [
        tool_call("calculator", {"expression": "2**32"}, id=None),
        tool_call("calculator", {"expression": "2**33"}, id="call_PTLP8xhu3uwZk4l3nlnrrJha"),
        said("4294967296 and 8589934592."),
    ]
    settings = AgentSettings(  # type: ignore[call-arg]
        OPENAI_BASE_URL=server.url,
        AGENT_MODEL="mistral-large-latest",
        DATA_DIR=str(tmp_path),
        MEMORY_ENABLED=False,
    )
    out, err = io.StringIO(), io.StringIO()
    await ask("What are 2**32 and 2**33?", settings, out=out, err=err)
    assert out.getvalue() == "4294967296 and 8589934592.\n", err.getvalue()[-1500:]
    sent = [m for m in server.requests[-1]["messages"] if m["role"] in ("assistant", "tool")]
    calls = [c["id"] for m in sent for c in m.get("tool_calls") or ()]
    results = [m["tool_call_id"] for m in sent if m["role"] == "tool"]
    assert calls == results and len(set(calls)) == 2, sent
    assert not any("reasoning_content" in m for m in sent), sent  # OpenAI refuses the field
    assert server.requests[1]["messages"][-2]["tool_calls"][0]["id"] == calls[0]  # the same on every step


async def test_deepseeks_thinking_goes_back_with_its_tool_calls(server: CompatServer, tmp_path: Path) -> None:
    # DeepSeek's thinking mode (deepseek-reasoner) refuses a conversation whose tool-calling turn comes back
    # without its reasoning_content: every run failed at its second step with "refused the request,
    # apparently over tool calling (HTTP 400): this server or model may not support tools".
    from agent.ask import ask
    from agent.config import AgentSettings

    server.deepseek_thinking = True
    fn = {"name": "calculator", "arguments": '{"expression": "2**32"}'}
    call = {"index": 0, "id": "call_00001", "type": "function", "function": fn}
    server.answers += [
        sse(
            chunk({"role": "assistant", "content": None, "reasoning_content": "The user wants 2**32. "}),
            chunk({"reasoning_content": "I will use the calculator."}),
            chunk({"tool_calls": [call]}),
            chunk({}, "tool_calls"),
        ),
        sse(
            chunk({"reasoning_content": "It said 4294967296."}),
            chunk({"content": "4294967296"}),
            chunk({}, "stop"),
        ),
    ]
    settings = AgentSettings(  # type: ignore[call-arg]
        OPENAI_BASE_URL=server.url,
        AGENT_MODEL="deepseek-reasoner",
        DATA_DIR=str(tmp_path),
        MEMORY_ENABLED=False,
    )
    out, err = io.StringIO(), io.StringIO()
    result = await ask("What is 2**32?", settings, out=out, err=err)
    assert out.getvalue() == "4294967296\n", err.getvalue()[-1500:]
    sent = [m for m in server.requests[1]["messages"] if m["role"] == "assistant"]
    assert [m["reasoning_content"] for m in sent] == ["The user wants 2**32. I will use the calculator."], (
        sent
    )
    assert "I will use" not in out.getvalue() + err.getvalue()  # sent back, never shown
    kept = [m.reasoning for m in result.messages if m.role == "assistant"]  # stored with the conversation
    assert kept == ["The user wants 2**32. I will use the calculator.", "It said 4294967296."], kept


async def test_a_tool_call_the_server_passed_on_as_text_is_not_the_answer(
    server: CompatServer, tmp_path: Path
) -> None:
    # vLLM with another model's --tool-call-parser, Ollama's qwen2.5-coder or LM Studio pass a call they
    # cannot read on as text: `ask` printed it as the answer and exited 0 ("answered").
    from agent.ask import ask
    from agent.config import AgentSettings

    written = (
        '<tool_call>\n{"name": "calculator", "arguments": {"expression": "2**32"}}\n</tool_call>'  # Qwen
    )
    server.answers.append(said(written))
    settings = AgentSettings(  # type: ignore[call-arg]
        OPENAI_BASE_URL=server.url, AGENT_MODEL="m", DATA_DIR=str(tmp_path), MEMORY_ENABLED=False
    )
    out, err = io.StringIO(), io.StringIO()
    result = await ask("What is 2**32?", settings, out=out, err=err)
    assert result.status == "error" and out.getvalue() == "", out.getvalue()
    line = next(x for x in err.getvalue().splitlines() if x.startswith("error:"))
    assert "wrote its call to calculator as text" in line and "--tool-call-parser" in line, line


def test_which_replies_are_tool_calls_written_as_text() -> None:
    from agent.models.server_fixes import tool_call_as_text

    tools = [{"type": "function", "function": {"name": "calculator"}}]
    for written in (  # Llama 3.x's two forms and Mistral's: each only a call, so not an answer
        '{"name": "calculator", "parameters": {"expression": "2**32"}}',
        '<|python_tag|>{"name": "calculator", "parameters": {"expression": "2**32"}}',
        '[TOOL_CALLS][{"name": "calculator", "arguments": {"expression": "2**32"}}]',
    ):
        assert tool_call_as_text(written, tools) == "calculator", written
    shown = 'Call it like this:\n<tool_call>{"name": "calculator", "arguments": {}}</tool_call>'
    assert tool_call_as_text(shown, tools) is None
    assert tool_call_as_text('{"name": "Ada", "parameters": 3}', tools) is None  # no tool of that name
    assert tool_call_as_text('{"name": "calculator", "arguments": {}}', []) is None  # no tools offered


async def test_openrouters_privacy_refusal_names_its_settings_not_the_base_url(
    server: CompatServer, http: httpx.AsyncClient
) -> None:
    # OpenRouter answers a free model the account's privacy settings exclude with this 404, which names
    # no model: it read "no Chat Completions API at https://openrouter.ai/api/v1: check OPENAI_BASE_URL".
    said = "No endpoints found matching your data policy (Free model publication). Configure: https://openrouter.ai/settings/privacy"
    server.answers.append(status(404, {"error": {"message": said, "code": 404}}))
    model = OpenAIChatModel("deepseek/deepseek-r1:free", base_url=server.url, client=http)
    with pytest.raises(ModelError) as e:
        await final_response(model, [Message("user", "hi")], ModelSettings())
    assert "openrouter.ai/settings/privacy" in e.value.message and "OPENAI_BASE_URL" not in e.value.message, (
        e.value
    )
    assert len(server.requests) == 1  # no retry changes it


async def test_groqs_tool_use_failed_is_asked_again(server: CompatServer, http: httpx.AsyncClient) -> None:
    # Groq answers a tool call its parser could not read (HTTP 400 tool_use_failed; Llama and Kimi write
    # such calls now and then): the run ended "this server or model may not support tools", for a model
    # that calls tools, when asking again usually gets a readable call.
    failed = {
        "message": "Failed to call a function. Please adjust your prompt. See 'failed_generation' for more details.",
        "type": "invalid_request_error",
        "code": "tool_use_failed",
        "failed_generation": '<function=calculator>{"expression": "2**32"}</function>',
    }
    server.answers += [status(400, {"error": failed}), whole("4294967296")]
    model = OpenAIChatModel("llama-3.3-70b-versatile", base_url=server.url, client=http, backoff_initial=0.01)
    answer = await final_response(model, [Message("user", "2**32?")], ModelSettings(stream=False))
    assert answer is not None and answer.message.content == "4294967296" and len(server.requests) == 2


async def test_a_reply_ending_in_tool_calls_with_none_names_the_parser(
    server: CompatServer, tmp_path: Path
) -> None:
    # vLLM's tool parser that finds the start of a call it cannot read ends the reply with finish_reason
    # "tool_calls" and no call: it was asked again, paid twice, and ended "m returned an empty answer twice".
    from agent.ask import ask
    from agent.config import AgentSettings

    server.default = sse(chunk({"role": "assistant", "content": ""}), chunk({}, "tool_calls"))
    settings = AgentSettings(  # type: ignore[call-arg]
        OPENAI_BASE_URL=server.url, AGENT_MODEL="m", DATA_DIR=str(tmp_path), MEMORY_ENABLED=False
    )
    out, err = io.StringIO(), io.StringIO()
    await ask("What is 2**32?", settings, out=out, err=err)
    line = next(x for x in err.getvalue().splitlines() if x.startswith("error:"))
    assert "--tool-call-parser" in line and "empty answer" not in line, line
    assert len(server.requests) == 1


async def test_doctor_names_a_llama_cpp_server_started_with_a_small_context(
    server: CompatServer, tmp_path: Path
) -> None:
    # `llama-server -m model.gguf --jinja` holds 4,096 tokens (its default -c): doctor said ok, and runs
    # failed once they had read a page or two ("request exceeds the available context size").
    server.llama_cpp_n_ctx = 4096
    quick = {"ROUTER_CLASSIFIER": "heuristic", "PYTHON_SANDBOX": "off"}
    code, out, err = await agentbot(tmp_path, "doctor", env=env(server, **quick))
    assert code == 1, out + err[-1500:]
    line = next((x for x in out.splitlines() if "provider openai" in x), out + err)
    assert line.startswith("FAIL") and "4,096 tokens of context" in line and "-c 32768" in line, (
        out + err[-1500:]
    )
