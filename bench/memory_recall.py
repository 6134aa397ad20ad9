"""Long-term memory figures: recall latency by size and layout, embedding speed, store throughput,
disk and RAM. Run: ``.venv/bin/python bench/memory_recall.py`` (about 1.5 minutes on 2 cores).

Baseline, measured in the same run: Chroma's own ``query`` on one plain 1k collection with no
filter, the fastest a Chroma search gets here. Ratios are p95 against that baseline's p95.

Method. 1000 synthetic but varied sentences are embedded once with the real MiniLM model (that is
also the throughput figure); the vectors of the bulk memories are those plus Gaussian noise
(re-normalised, cosine about 0.86 to their source), each stored with its own text, so the HNSW
graphs see 1000 loose clusters rather than random points. Recall is timed with
``search`` given a vector (the store's whole path: worker thread, Chroma, result conversion) so that
embedding is reported apart; "embedded query" adds the query's embedding (``search`` given text).

Scenarios: one guild grown to 1k, 10k and 50k memories (1k lives in a shared bucket, the larger
sizes in the guild's own collection); 500 servers of 20 memories plus one of 1500 in 16 shared
buckets, with RSS taken there (model loaded, every bucket queried).
"""

from __future__ import annotations

import asyncio
import gc
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import chromadb  # noqa: E402
from chromadb.config import Settings  # noqa: E402

from agent.embeddings.minilm import MiniLMEmbedding  # noqa: E402
from agent.memory import ChromaMemory, NewMemory  # noqa: E402

SEED = 7
UNIQUE = 1000
QUERIES = 200
SERVERS = 500
PER_SERVER = 20
MEDIUM = 1500
SIZES = (1_000, 10_000, 50_000)
TARGET_RECALL_P95_MS = 15.0
TARGET_QUERY_EMBED_MS = 10.0
TARGET_RSS_MB = 400.0

SUBJECTS = [
    "The raid team",
    "Our Minecraft server",
    "The book club",
    "The moderators",
    "The Rust compiler",
    "PostgreSQL",
    "The giveaway bot",
    "Kubernetes",
    "The weekly newsletter",
    "The Valheim world",
    "The art channel",
    "Python's asyncio",
    "The tournament bracket",
    "The music quiz",
    "Docker",
    "The support queue",
    "The translation team",
    "The speedrun leaderboard",
    "Redis",
    "The event calendar",
]
VERBS = [
    "moved",
    "decided",
    "agreed",
    "found",
    "reported",
    "scheduled",
    "measured",
    "fixed",
    "changed",
    "announced",
    "confirmed",
    "rejected",
    "documented",
    "benchmarked",
    "archived",
]
OBJECTS = [
    "the backup window to {n} am",
    "a limit of {n} messages per minute",
    "the meeting to Thursday at {n} pm",
    "that the cache hit rate was {n} percent",
    "a bug in the login flow after release {n}",
    "new rules for channel #{w}",
    "the prize pool to {n} dollars",
    "the latency at {n} milliseconds",
    "that version {n} breaks the {w} plugin",
    "a vote on the next {w} theme",
    "the queue length at {n}",
    "that {w} needs {n} more volunteers",
    "the map reset for season {n}",
    "a {w} workshop for beginners",
]
WORDS = [
    "pixel",
    "harbor",
    "quantum",
    "garden",
    "copper",
    "nebula",
    "falcon",
    "lantern",
    "meadow",
    "circuit",
    "glacier",
    "orchid",
    "saffron",
    "tundra",
    "velvet",
    "zephyr",
    "basalt",
    "citadel",
    "ember",
    "fjord",
]


def sentences(n: int, rng: random.Random) -> list[str]:
    out = []
    for i in range(n):
        obj = rng.choice(OBJECTS).format(n=rng.randint(2, 999), w=rng.choice(WORDS))
        extra = " ".join(rng.sample(WORDS, rng.randint(0, 6)))
        out.append(f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {obj}. {extra} (#{i})".strip())
    return out


def noisy(base: np.ndarray, n: int, rng: np.random.Generator, sigma: float = 0.03) -> np.ndarray:
    picks = base[np.arange(n) % len(base)]
    v = picks + rng.normal(0.0, sigma, picks.shape).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def rss_mb() -> tuple[float, float]:
    fields = dict(
        line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line
    )
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def disk_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def pct(samples: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples) * 1000.0, q))


async def timed_searches(memory: ChromaMemory, ns: str, vectors: np.ndarray) -> list[float]:
    await memory.search(ns, vectors[0], 5)  # warm: loads the collection's index
    out = []
    for v in vectors:
        t = time.perf_counter()
        await memory.search(ns, v, 5)
        out.append(time.perf_counter() - t)
    return out


async def bulk_store(memory: ChromaMemory, ns: str, texts: list[str], vectors: np.ndarray) -> float:
    t = time.perf_counter()
    for i in range(0, len(texts), 1000):
        await memory.store_many(
            ns, [NewMemory(x) for x in texts[i : i + 1000]], vectors=vectors[i : i + 1000]
        )
    return time.perf_counter() - t


async def main() -> None:
    started = time.perf_counter()
    rng = random.Random(SEED)
    nrng = np.random.default_rng(SEED)
    work = Path(tempfile.mkdtemp(prefix="memory-bench-"))
    rows: list[tuple[str, str, str, str]] = []  # (what, value, target, ratio)
    try:
        # -- embedding ---------------------------------------------------------------------------
        emb = MiniLMEmbedding()
        t = time.perf_counter()
        emb.load()
        load_s = time.perf_counter() - t
        texts = sentences(UNIQUE, rng)
        t = time.perf_counter()
        base = emb.embed_documents(texts)
        embed_rate = UNIQUE / (time.perf_counter() - t)
        query_texts = [
            f"what did {s.lower()} {v} about {w}"
            for s, v, w in zip(
                rng.choices(SUBJECTS, k=60), rng.choices(VERBS, k=60), rng.choices(WORDS, k=60), strict=True
            )
        ]
        single = []
        for q in query_texts:
            t = time.perf_counter()
            emb.embed_query(q)
            single.append(time.perf_counter() - t)
        qvecs = noisy(emb.embed_documents(query_texts), QUERIES, nrng, 0.02)
        print(f"embedding ready ({time.perf_counter() - started:.0f} s)", file=sys.stderr)

        # -- baseline: Chroma alone, one 1k collection, no filter ---------------------------------
        client = chromadb.PersistentClient(
            path=str(work / "baseline"), settings=Settings(anonymized_telemetry=False)
        )
        col = client.create_collection("baseline-1k", configuration={"hnsw": {"space": "cosine"}})
        vec1k = noisy(base, 1000, nrng)
        col.add(
            ids=[str(i) for i in range(1000)],
            embeddings=vec1k,
            documents=texts[:1000],
            metadatas=[{"ns": "x"} for _ in range(1000)],
        )
        base_samples = []
        for v in qvecs:
            t = time.perf_counter()
            col.query(query_embeddings=[v], n_results=5)
            base_samples.append(time.perf_counter() - t)
        base_p95 = pct(base_samples, 95)
        client.close()
        rows.append(
            (
                "baseline: chroma query, 1k collection, no filter",
                f"p50 {pct(base_samples, 50):.2f} ms, p95 {base_p95:.2f} ms",
                "",
                "1.0x",
            )
        )

        # -- 500 servers -------------------------------------------------------------------------
        many = ChromaMemory(work / "servers", embedding=emb, buckets=16)
        await many.open()
        total = SERVERS * PER_SERVER + MEDIUM
        vecs = noisy(base, total, nrng)
        all_texts = [f"{texts[i % UNIQUE]} [server memory {i}]" for i in range(total)]
        t = time.perf_counter()
        for s in range(SERVERS):
            lo = s * PER_SERVER
            await many.store_many(
                f"9{s:017d}",
                [NewMemory(x) for x in all_texts[lo : lo + PER_SERVER]],
                vectors=vecs[lo : lo + PER_SERVER],
            )
        small_rate = SERVERS * PER_SERVER / (time.perf_counter() - t)
        await bulk_store(many, "8" * 18, all_texts[SERVERS * PER_SERVER :], vecs[SERVERS * PER_SERVER :])
        for s in range(0, SERVERS, 7):  # touch every bucket, as a busy bot would
            await many.search(f"9{s:017d}", qvecs[0], 5)
        small = await timed_searches(many, f"9{7:017d}", qvecs)
        medium = await timed_searches(many, "8" * 18, qvecs)
        gc.collect()
        rss_now, rss_peak = rss_mb()
        per_mem = disk_bytes(work / "servers") / total
        rows.append(
            (
                f"recall, 1 small guild ({PER_SERVER}) among {SERVERS} servers",
                f"p50 {pct(small, 50):.2f} ms, p95 {pct(small, 95):.2f} ms",
                f"p95 < {TARGET_RECALL_P95_MS:g} ms",
                f"{pct(small, 95) / base_p95:.1f}x",
            )
        )
        rows.append(
            (
                f"recall, 1 guild of {MEDIUM} among {SERVERS} servers",
                f"p50 {pct(medium, 50):.2f} ms, p95 {pct(medium, 95):.2f} ms",
                f"p95 < {TARGET_RECALL_P95_MS:g} ms",
                f"{pct(medium, 95) / base_p95:.1f}x",
            )
        )
        rows.append(
            (
                f"process RSS with {SERVERS + 1} servers (model loaded)",
                f"{rss_now:.0f} MB (peak {rss_peak:.0f} MB)",
                f"< {TARGET_RSS_MB:g} MB",
                "",
            )
        )
        rows.append(
            (f"disk per memory, {SERVERS + 1} servers ({total} memories)", f"{per_mem:.0f} bytes", "", "")
        )
        rows.append(
            ("store, small guilds (20 per call, vectors given)", f"{small_rate:.0f} memories/s", "", "")
        )
        await many.close()
        print(f"500 servers done ({time.perf_counter() - started:.0f} s)", file=sys.stderr)

        # -- one guild growing to 50k ----------------------------------------------------------------
        one = ChromaMemory(work / "one", embedding=emb, buckets=16)
        await one.open()
        ns = "1" * 18
        big = noisy(base, SIZES[-1], nrng)
        big_texts = [f"{texts[i % UNIQUE]} [guild memory {i}]" for i in range(SIZES[-1])]
        have = 0
        bulk_s = 0.0
        for size in SIZES:
            bulk_s += await bulk_store(one, ns, big_texts[have:size], big[have:size])
            have = size
            samples = await timed_searches(one, ns, qvecs)
            stats = await one.stats(ns)
            rows.append(
                (
                    f"recall, one guild of {size // 1000}k ({stats.layout})",
                    f"p50 {pct(samples, 50):.2f} ms, p95 {pct(samples, 95):.2f} ms",
                    f"p95 < {TARGET_RECALL_P95_MS:g} ms",
                    f"{pct(samples, 95) / base_p95:.1f}x",
                )
            )
            print(f"{size} done ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
        rows.append(
            (
                "store, one guild (1000 per call, vectors given)",
                f"{SIZES[-1] / bulk_s:.0f} memories/s",
                "",
                "",
            )
        )
        per_mem_one = disk_bytes(work / "one") / SIZES[-1]
        estimate = (await one.stats(ns)).bytes_estimate / SIZES[-1]
        rows.append(
            (
                f"disk per memory, one guild of {SIZES[-1] // 1000}k",
                f"{per_mem_one:.0f} bytes (stats() estimates {estimate:.0f})",
                "",
                "",
            )
        )

        # Embedding included: what a user's question costs end to end.
        fresh = sentences(100, random.Random(SEED + 1))
        t = time.perf_counter()
        await one.store_many(ns, [NewMemory(x) for x in fresh])
        rows.append(
            (
                "store with embedding (100 texts, one call)",
                f"{100 / (time.perf_counter() - t):.0f} memories/s",
                "",
                "",
            )
        )
        full = []
        for q in query_texts:
            t = time.perf_counter()
            await one.search(ns, q, 5)
            full.append(time.perf_counter() - t)
        rows.append(
            (
                "recall incl. query embedding, 50k guild",
                f"p50 {pct(full, 50):.2f} ms, p95 {pct(full, 95):.2f} ms",
                "",
                f"{pct(full, 95) / base_p95:.1f}x",
            )
        )
        await one.close()

        rows.insert(1, ("embedding: MiniLM int8, load", f"{load_s * 1000:.0f} ms", "", ""))
        rows.insert(
            2, ("embedding: batch throughput (synthetic sentences)", f"{embed_rate:.0f} sentences/s", "", "")
        )
        rows.insert(
            3,
            (
                "embedding: single query",
                f"p50 {pct(single, 50):.2f} ms, p95 {pct(single, 95):.2f} ms",
                f"p50 < {TARGET_QUERY_EMBED_MS:g} ms",
                f"{pct(single, 95) / base_p95:.1f}x",
            ),
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)

    width = max(len(r[0]) for r in rows)
    vwidth = max(len(r[1]) for r in rows)
    print(f"\n{'measure':<{width}}  {'value':<{vwidth}}  {'target':<14}  p95 vs baseline")
    print("-" * (width + vwidth + 34))
    for what, value, target, ratio in rows:
        print(f"{what:<{width}}  {value:<{vwidth}}  {target:<14}  {ratio}")
    print(
        f"\nchromadb {chromadb.__version__}, {QUERIES} timed recalls per row, "
        f"finished in {time.perf_counter() - started:.0f} s"
    )


if __name__ == "__main__":
    asyncio.run(main())
