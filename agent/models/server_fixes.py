"""What self-hosted and routing servers mean by the refusals no retry changes, and the fix to say:
their words (llama.cpp's, vLLM's, Ollama's, OpenRouter's) mapped to the flag or setting that ends them.

Apart from the adapter (``openai.py``) because ``agentbot doctor`` says the same fixes for its probes.
"""

from __future__ import annotations

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
