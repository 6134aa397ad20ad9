"""What self-hosted and routing servers mean by the refusals no retry changes, and the fix to say:
their words (llama.cpp's, vLLM's, Ollama's, OpenRouter's) mapped to the flag or setting that ends them.

Apart from the adapter (``openai.py``) because ``agentbot doctor`` says the same fixes for its probes.
"""

from __future__ import annotations

import json
import re
from typing import Any

_REFUSALS = {  # errors no retry changes, by their words (mostly local servers' HTTP 500s), and the fix
    "tools param requires --jinja": "start llama-server with --jinja (without it, it refuses tools, and every "
    "run offers them)",
    "cannot use tools with stream": "set AGENT_STREAM=false, or update the llama.cpp server (this build "
    "cannot stream with tools)",
    "requires more system memory": "this machine has too little memory for the model: use a smaller one (or "
    "a smaller quantization)",
    # OpenRouter's 404 for a model none of whose providers takes tools: it read as a wrong OPENAI_BASE_URL
    "no endpoints found that support tool use": "no provider of this model takes tools, and every run "
    "offers them: pick a model that supports tool calling",
    # OpenRouter's 404 when the account's privacy settings allow none of the model's providers (free models
    # need "Free model publication"): read as a base URL with no API behind it, "check OPENAI_BASE_URL"
    "no endpoints found matching your data policy": "OpenRouter's privacy settings of this key's account "
    "allow none of this model's providers: allow them at https://openrouter.ai/settings/privacy (free models "
    "need Free model publication), or pick another model",
    # vLLM started without tool calling answers every request offering tools with HTTP 400: read as "may
    # not support tools", the flag it names was left for the operator to find in the quoted words.
    "tool choice requires --enable-auto-tool-choice": "start vLLM with --enable-auto-tool-choice and the "
    "--tool-call-parser for this model (hermes for Qwen, llama3_json for Llama 3.1, mistral for Mistral): "
    "every run offers tools",
    # Ollama's HTTP 400 for a model whose template has no tools (gemma2, phi3, the first deepseek-r1 tags)
    "does not support tools": "this model cannot call tools, and every run offers them: use one whose "
    "`ollama show` lists tools (llama3.1, qwen2.5)",
}


_SMALL_CONTEXT = {  # a self-hosted server's words for a prompt past the context it was started with, and the fix
    "exceeds the available context size": "start llama-server with a larger --ctx-size (-c; --parallel N gives "
    "each slot 1/N of it)",
    "longer than the maximum model length": "start vLLM with a larger --max-model-len (up to the model's own)",
}


def refusal_fix(text: str) -> str | None:
    """What to do about an error body no retry changes (llama.cpp or vLLM refusing tools, Ollama short
    of memory), or None; ``agentbot doctor`` says it too."""
    said = text.lower()
    return next((f for refusal, f in _REFUSALS.items() if refusal in said), None)


def small_context_fix(text: str) -> str | None:
    """The flag to start the server with, where its error body says the prompt is past the context it
    was started with (llama.cpp's ``--ctx-size``, vLLM's ``--max-model-len``), else None."""
    said = text.lower()
    return next((f for words, f in _SMALL_CONTEXT.items() if words in said), None)


_MARKERS = ("<|python_tag|>", "[TOOL_CALLS]")  # Llama 3.x's and Mistral's lead-ins to a call
_HERMES = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.S)


def tool_call_as_text(text: str, tools: Any) -> str | None:
    """The tool named where a reply is nothing but a tool call written as text, else None: a server that
    does not parse this model's calls passes them on as the answer (vLLM with another model's
    ``--tool-call-parser``, Ollama's qwen2.5-coder, LM Studio). Such a run ended "answered" (exit 0)
    with ``<tool_call>{"name": "web_search", ...}</tool_call>`` printed as its answer. Counted only when
    the whole reply is calls (Hermes' ``<tool_call>`` blocks, or JSON objects with ``name`` and
    ``arguments``/``parameters``) to a tool the request offered: an answer that talks about one is kept."""
    offered = {t.get("function", {}).get("name") for t in tools or () if isinstance(t, dict)}
    said = text.strip()
    for marker in _MARKERS:
        said = said.removeprefix(marker).strip()
    if not offered or not said or said[0] not in "<[{":
        return None
    blocks = _HERMES.findall(said) if said.startswith("<tool_call>") else [said]
    if said.startswith("<tool_call>") and _HERMES.sub("", said).strip():
        return None  # words besides the calls: an answer
    names = []
    for block in blocks:
        try:
            value = json.loads(block)
        except (ValueError, RecursionError):
            return None
        for call in value if isinstance(value, list) else [value]:
            if not (
                isinstance(call, dict)
                and call.get("name") in offered
                and {"arguments", "parameters"} & set(call)
            ):
                return None
            names.append(call["name"])
    return ", ".join(names) or None


TEXT_CALL_FIX = (
    "its server did not read it as a tool call: on vLLM, start it with the "
    "--tool-call-parser for this model (hermes for Qwen, llama3_json for Llama 3.x, mistral for Mistral); "
    "on llama.cpp, --jinja; on Ollama or LM Studio, use a model whose tool calls it reads (llama3.1, qwen2.5)"
)
