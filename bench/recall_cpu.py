"""CPU of one memory recall on a server holding 200 memories (a small server's exact scan in a shared
bucket, with a retention policy as the bot passes one), through ``ChromaMemory.search`` given a vector.

    .venv/bin/python bench/recall_cpu.py [--memories 200] [--searches 40]

Five servers of ``--memories`` research memories of 1,000 characters each share 4 buckets; vectors are
random unit vectors (the search path, not the embedding, is measured). To compare with another commit,
run it with ``PYTHONPATH`` pointing at that commit's checkout.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # after PYTHONPATH, so another checkout can be measured

from agent.embeddings.minilm import MiniLMEmbedding  # noqa: E402
from agent.memory import ChromaMemory, NewMemory, RetentionPolicy  # noqa: E402

TEXT = "lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 18


async def main(ns: argparse.Namespace) -> None:
    emb = MiniLMEmbedding()
    emb.load()
    with tempfile.TemporaryDirectory() as tmp:
        memory = ChromaMemory(Path(tmp), embedding=emb, buckets=4)
        await memory.open()
        rng = np.random.default_rng(1)

        def unit(n: int) -> np.ndarray:
            v = rng.standard_normal((n, emb.dim)).astype(np.float32)
            return v / np.linalg.norm(v, axis=1, keepdims=True)

        for g in range(5):
            items = [NewMemory(f"memory {g}-{i} {TEXT}"[:1000], kind="research") for i in range(ns.memories)]
            await memory.store_many(str(1000 + g), items, vectors=unit(ns.memories))
        policy = RetentionPolicy(max_items=1000)
        queries = unit(ns.searches)
        await memory.search("1002", queries[0], k=5, retention=policy)
        t = time.process_time()
        for q in queries:
            await memory.search("1002", q, k=5, retention=policy)
        ms = (time.process_time() - t) / len(queries) * 1000
        await memory.close()
    print(f"recall on a server of {ns.memories} memories: {ms:.2f} ms of CPU per search")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--memories", type=int, default=200)
    ap.add_argument("--searches", type=int, default=40)
    asyncio.run(main(ap.parse_args()))
