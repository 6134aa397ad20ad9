"""Engine overhead against minimal ~40-line httpx ReAct loops, measured in the same run.

    .venv/bin/python bench/loop_overhead.py [--steps-sessions 40] [--sessions 200] [--repeats 5]
        [--concurrent-repeats 3]

Each engine variant is compared with the minimal loop of the same transport: ``engine-nostream`` with
``minimal`` (one JSON body per call), ``engine-stream`` with ``minimal-stream`` (server-sent events read
with httpx-sse and deltas assembled, the least any streaming client does).

1. Per step at zero model latency: wall and CPU time of this process per model+tool step.
2. 200 concurrent sessions of 5 tool steps at 200 ms model latency (ideal wall 6 calls x 0.2 s = 1.2 s):
   wall time and peak RSS per session.

The scripted server runs in its own process so its CPU is not counted; each measurement runs in a
fresh child process so peak RSS belongs to that variant alone.

On a shared machine one run is noise, so every repeat runs each variant right next to its baseline, in
the opposite order every other repeat (a machine getting busier or quieter favours neither side), and a
ratio is the median of the per-repeat ratios; the times shown are each variant's median repeat.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TOOL_STEPS = 5
BASELINE = {
    "minimal": "minimal",
    "minimal-default-pool": "minimal",
    "engine-nostream": "minimal",
    "minimal-stream": "minimal-stream",
    "engine-stream": "minimal-stream",
}
DEVNULL = open(os.devnull, "w")  # noqa: SIM115 - the log sink for the whole benchmark process


NOOP_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "noop",
            "description": "no-op",
            "parameters": {"type": "object", "properties": {"i": {"type": "integer"}}},
        },
    }
]
"""The one tool both minimal loops offer (the engine's ``noop`` has the same schema)."""


# --- the baseline: a minimal ReAct loop over httpx (about 40 lines) -------------------------------
async def minimal_session(client: Any, base_url: str, task: str) -> str:
    messages: list[dict[str, Any]] = [{"role": "user", "content": task}]
    for _ in range(12):
        r = await client.post(
            f"{base_url}/chat/completions",
            json={"model": "gpt-4o-mini", "messages": messages, "tools": NOOP_TOOLS},
        )
        r.raise_for_status()
        msg = r.json()["choices"][0]["message"]
        calls = msg.get("tool_calls") or []
        messages.append(
            {
                "role": "assistant",
                "content": msg.get("content") or "",
                **({"tool_calls": calls} if calls else {}),
            }
        )
        if not calls:
            return msg.get("content") or ""
        for c in calls:
            args = json.loads(c["function"]["arguments"] or "{}")
            messages.append({"role": "tool", "tool_call_id": c["id"], "content": f"ok {args.get('i')}"})
    return ""


# --- the streaming baseline: the same loop reading server-sent events with httpx-sse --------------
async def minimal_stream_session(client: Any, base_url: str, task: str) -> str:
    from httpx_sse import aconnect_sse

    messages: list[dict[str, Any]] = [{"role": "user", "content": task}]
    for _ in range(12):
        body = {"model": "gpt-4o-mini", "messages": messages, "tools": NOOP_TOOLS, "stream": True}
        text: list[str] = []
        calls: dict[int, dict[str, Any]] = {}
        async with aconnect_sse(client, "POST", f"{base_url}/chat/completions", json=body) as source:
            source.response.raise_for_status()
            async for sse in source.aiter_sse():
                if sse.data == "[DONE]":
                    continue
                choices = json.loads(sse.data).get("choices") or []
                delta = choices[0].get("delta") or {} if choices else {}
                if delta.get("content"):
                    text.append(delta["content"])
                for tc in delta.get("tool_calls") or ():
                    c = calls.setdefault(tc["index"], {"id": "", "name": "", "arguments": ""})
                    fn = tc.get("function") or {}
                    c["id"] = tc.get("id") or c["id"]
                    c["name"] += fn.get("name") or ""
                    c["arguments"] += fn.get("arguments") or ""
        content = "".join(text)
        wire = [
            {"id": c["id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
            for c in calls.values()
        ]
        messages.append({"role": "assistant", "content": content, **({"tool_calls": wire} if wire else {})})
        if not wire:
            return content
        for c in calls.values():
            args = json.loads(c["arguments"] or "{}")
            messages.append({"role": "tool", "tool_call_id": c["id"], "content": f"ok {args.get('i')}"})
    return ""


# --- the engine -----------------------------------------------------------------------------------
def make_engine(client: Any, base_url: str, stream: bool) -> Any:
    from agent import ToolRegistry, tool
    from agent.loop import Agent
    from agent.models.base import ModelSettings
    from agent.models.openai import OpenAIChatModel

    @tool
    async def noop(i: int = 0) -> str:
        """Does nothing."""
        return f"ok {i}"

    model = OpenAIChatModel("gpt-4o-mini", base_url=base_url, client=client)
    return Agent(model, ToolRegistry([noop]), settings=ModelSettings(stream=stream))


async def engine_session(agent: Any, task: str) -> str:
    from agent.events import FinalEvent

    text = ""
    async with contextlib.aclosing(agent.run(task)) as events:
        async for ev in events:
            if isinstance(ev, FinalEvent):
                text = ev.result.text
    return text


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def child(variant: str, base_url: str, sessions: int, concurrent: bool) -> dict[str, Any]:
    import httpx

    from agent.logs import configure_logging
    from agent.models.http import make_client

    configure_logging("INFO", "json", DEVNULL)  # the engine logs each step, as in production
    client = make_client() if variant != "minimal-default-pool" else httpx.AsyncClient(timeout=120)
    agent = (
        None
        if variant.startswith("minimal")
        else make_engine(client, base_url, stream=variant == "engine-stream")
    )

    async def one(i: int) -> str:
        if variant == "minimal-stream":
            return await minimal_stream_session(client, base_url, f"task {i}")
        if agent is None:
            return await minimal_session(client, base_url, f"task {i}")
        return await engine_session(agent, f"task {i}")

    # Warm up: connection pool, imports, JIT-ish caches.
    await asyncio.gather(*(one(i) for i in range(4)))
    base_rss = rss_kib()
    wall0, cpu0 = time.perf_counter(), time.process_time()
    if concurrent:
        results = await asyncio.gather(*(one(i) for i in range(sessions)))
    else:
        results = [await one(i) for i in range(sessions)]
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    await client.aclose()
    assert all(r == "done" for r in results), results[:3]
    steps = sessions * (TOOL_STEPS + 1)
    return {
        "variant": variant,
        "wall": wall,
        "cpu": cpu,
        "steps": steps,
        "rss_per_session_kib": max(0, peak - base_rss) / sessions,
    }


def run_child(variant: str, url: str, sessions: int, concurrent: bool) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", variant, "--url", url, "--n", str(sessions)]
        + (["--concurrent"] if concurrent else []),
        check=True,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(
    variants: tuple[str, ...], url: str, sessions: int, concurrent: bool, repeats: int
) -> dict[str, list[dict[str, Any]]]:
    """Every variant ``repeats`` times, interleaved, in the opposite order every other repeat."""
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    for i in range(repeats):
        for variant in variants if i % 2 == 0 else variants[::-1]:
            runs[variant].append(run_child(variant, url, sessions, concurrent))
    return runs


def ratio(runs: dict[str, list[dict[str, Any]]], variant: str, key: str) -> float:
    """The median over repeats of ``variant``'s ``key`` against its baseline's in the same repeat."""
    base = runs[BASELINE[variant]]
    return statistics.median(r[key] / b[key] for r, b in zip(runs[variant], base, strict=True))


def start_server(latency: float) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.fakes.llm_server",
            "--latency",
            str(latency),
            "--tool-steps",
            str(TOOL_STEPS),
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    return proc, f"http://127.0.0.1:{port}/v1"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--child")
    ap.add_argument("--url")
    ap.add_argument("--n", type=int, default=0)
    ap.add_argument("--concurrent", action="store_true")
    ap.add_argument("--steps-sessions", type=int, default=40)
    ap.add_argument("--sessions", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--concurrent-repeats", type=int, default=3)
    ns = ap.parse_args()
    if ns.child:
        print(json.dumps(asyncio.run(child(ns.child, ns.url, ns.n, ns.concurrent))))
        return

    fast, fast_url = start_server(0.0)
    slow, slow_url = start_server(0.2)
    try:
        print(
            f"1) per step at zero model latency: {ns.steps_sessions} sequential sessions x {TOOL_STEPS + 1} calls, "
            f"median of {ns.repeats}"
        )
        variants = ("minimal", "engine-nostream", "minimal-stream", "engine-stream")
        runs = measure(variants, fast_url, ns.steps_sessions, False, ns.repeats)
        print(f"{'variant':<18}{'wall/step ms':>14}{'cpu/step ms':>13}{'wall ratio':>12}{'cpu ratio':>11}")
        for v, rs in runs.items():
            w = statistics.median(r["wall"] / r["steps"] for r in rs) * 1000
            c = statistics.median(r["cpu"] / r["steps"] for r in rs) * 1000
            print(
                f"{v:<18}{w:>14.3f}{c:>13.3f}{ratio(runs, v, 'wall'):>11.2f}x{ratio(runs, v, 'cpu'):>10.2f}x"
            )

        print(
            f"\n2) {ns.sessions} concurrent sessions x {TOOL_STEPS} tool steps at 200 ms model latency "
            f"(ideal wall {(TOOL_STEPS + 1) * 0.2:.1f} s), median of {ns.concurrent_repeats}"
        )
        variants = ("minimal-default-pool", "minimal", "engine-nostream", "minimal-stream", "engine-stream")
        runs = measure(variants, slow_url, ns.sessions, True, ns.concurrent_repeats)
        print(f"{'variant':<22}{'wall s':>8}{'ratio':>8}{'RSS/session KiB':>17}")
        for v, rs in runs.items():
            wall = statistics.median(r["wall"] for r in rs)
            rss = statistics.median(r["rss_per_session_kib"] for r in rs)
            print(f"{v:<22}{wall:>8.2f}{ratio(runs, v, 'wall'):>7.2f}x{rss:>17.1f}")
        print(
            "\nminimal = ~40-line httpx loop with agentbot's pool limits; minimal-default-pool = same loop with "
            "one plain httpx pool (default limits, 100 connections); minimal-stream = the same loop streaming "
            "with httpx-sse. Ratios are against the minimal loop of the same transport. Targets: engine "
            "cpu/step <= 1.3x, 200-session wall <= 1.2x, < 1024 KiB RSS per session."
        )
    finally:
        for p in (fast, slow):
            p.terminate()
            p.wait()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
