"""The order the test files are handed to ``pytest -n N --dist loadfile`` workers: slowest first.

xdist hands a worker its next file when it is nearly done with the last one, in collection order, after
sorting files by their number of tests (``--loadscope-reorder``, its default). That put the one- and
two-test files last, and those are the slow ones (processes started, killed and restarted; two shard
processes): on 2 cores the suite ended with one worker running them while the others sat idle. Handing
out the slowest files first (longest processing time first) lets the many small files fill the gaps at
the end. Measured on the 2-core machine shared with other runs (load average 6-15), ``-n 6``: the six
workers finished 78 s apart before (the last 78 s ran only the shard, restart, settings-isolation and
run-stopping files on one to five workers), 14 s apart with this order, ending on the small files.
Back to back at load 3.6-6: 3:07 wall with xdist's order (workers 19 s apart), 2:57 with this one (1 s);
the per-file times below, replayed on 6 workers, end 9 % sooner (472 s for the busiest down to 430).

``SECONDS`` holds each file's total test time in seconds: per-file sums of two runs of
``pytest -n 6 --dist loadfile --durations=0`` under that load, averaged (about 3x a quiet machine's
figures; only their order matters). A file not listed (a new one) counts ``UNLISTED_PER_TEST`` seconds a test: rather early than last, where a slow
one would hold up the end. Re-measure when a file's time changes much; a stale figure only costs balance,
never a result.
"""

from __future__ import annotations

from pathlib import PurePath

import pytest

UNLISTED_PER_TEST = 2.0

SECONDS: dict[str, int] = {
    "test_blackbox_cli_wire.py": 224,
    "test_operator_errors.py": 179,
    "test_blackbox_cli_settings.py": 177,
    "test_blackbox_operator.py": 124,
    "test_classifier_embedding.py": 103,
    "test_doctor.py": 98,
    "test_blackbox_tools_mcp.py": 93,
    "test_restart_process.py": 86,
    "test_backup.py": 81,
    "test_blackbox_readme_cli.py": 78,
    "test_cli_ask.py": 71,
    "test_fetch_security.py": 68,
    "test_blackbox_answers.py": 59,
    "test_e2e_research.py": 59,
    "test_shards_e2e.py": 56,
    "test_fault_e2e.py": 55,
    "test_memory_store.py": 53,
    "test_run_stopping.py": 49,
    "test_blackbox_threads_restart.py": 48,
    "test_e2e_threads.py": 46,
    "test_settings_isolation.py": 42,
    "test_e2e_rerun.py": 40,
    "test_blackbox_cli_doctor.py": 39,
    "test_fetch_pages.py": 35,
    "test_blackbox_admin_store_cli.py": 33,
    "test_e2e_thread_manners.py": 30,
    "test_blackbox_tools_search.py": 25,
    "test_e2e_mcp.py": 24,
    "test_store_pg.py": 24,
    "test_blackbox_readme_backups.py": 23,
    "test_memory_embeddings.py": 22,
    "test_blackbox_bot_threads.py": 21,
    "test_run_quiet.py": 21,
    "test_memory_server.py": 20,
    "test_store_sessions.py": 20,
    "test_blackbox_cli_costs.py": 19,
    "test_blackbox_threads_followups.py": 19,
    "test_e2e_reader.py": 19,
    "test_reader.py": 19,
    "test_security_fetch_domains.py": 19,
    "test_e2e_attachments.py": 18,
    "test_blackbox_admin_postgres.py": 17,
    "test_memory_import.py": 17,
    "test_memory_isolation.py": 17,
    "test_store_settings.py": 17,
    "test_e2e_config.py": 16,
    "test_blackbox_ollama.py": 15,
    "test_e2e_turns.py": 15,
    "test_sandbox_python.py": 15,
    "test_e2e_one_model.py": 13,
    "test_ssrf_guard.py": 13,
    "test_blackbox_first_run.py": 12,
    "test_e2e_memory.py": 12,
    "test_quota_enforcement.py": 12,
    "test_security_memory.py": 12,
    "test_agent_loop.py": 11,
    "test_blackbox_tools_fetch.py": 11,
    "test_prices.py": 11,
    "test_mcp_tools.py": 10,
    "test_sandbox_isolation.py": 10,
    "test_attachments.py": 9,
    "test_blackbox_threads_permissions.py": 9,
    "test_e2e_streaming.py": 9,
    "test_reasoning_models.py": 9,
    "test_blackbox_admin_settings.py": 8,
    "test_e2e_usage.py": 8,
    "test_provider_gemini.py": 8,
    "test_router_tiers.py": 8,
    "test_shards_fake.py": 7,
    "test_library_face.py": 6,
    "test_shards_store.py": 6,
    "test_e2e_checkpoints.py": 5,
    "test_fake_discord.py": 5,
    "test_router_fallback.py": 5,
    "test_store_rerun.py": 5,
    "test_blackbox_admin_quotas.py": 4,
    "test_blackbox_threads_stop.py": 4,
    "test_files_quota.py": 4,
    "test_model_transport.py": 4,
    "test_router_escalation.py": 4,
    "test_router_hand_down.py": 4,
    "test_router_research.py": 4,
    "test_provider_anthropic.py": 3,
    "test_search_backends.py": 3,
    "test_blackbox_tools_attachments.py": 2,
    "test_classifier.py": 2,
    "test_e2e_ready_race.py": 2,
    "test_files_workspace.py": 2,
    "test_settings_documented.py": 2,
    "test_bench_arbitrage.py": 1,
    "test_blackbox_threads_mentions.py": 1,
    "test_blackbox_usage.py": 1,
    "test_bot_attach.py": 1,
    "test_pacing_fair.py": 1,
    "test_ratelimit_buckets.py": 1,
    "test_retry_policy.py": 1,
    "test_security_redaction.py": 1,
    "test_security_values.py": 1,
    "test_splitting.py": 1,
    "test_store_db.py": 1,
    "test_bench_routing_path.py": 1,
    "test_blackbox_readme_deploy.py": 1,
    "test_blackbox_readme_env_example.py": 1,
    "test_blackbox_readme_layout.py": 1,
    "test_quota_limits.py": 1,
    "test_thread_header.py": 1,
    "test_turn_checkpoint.py": 1,
}


def estimate(path: str, tests: int) -> float:
    """Seconds the file at ``path`` (a node id's file part) is expected to take."""
    return SECONDS.get(PurePath(path).name, UNLISTED_PER_TEST * tests)


def pytest_configure(config: pytest.Config) -> None:
    # xdist's own reorder (by number of tests) would undo the order below.
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files slowest first, each file's tests kept together and in their own order (every worker
    computes the same order, as xdist requires)."""
    files: dict[str, list[pytest.Item]] = {}
    for item in items:
        files.setdefault(item.nodeid.split("::")[0], []).append(item)
    order = sorted(files, key=lambda f: -estimate(f, len(files[f])))  # stable: ties keep their order
    items[:] = [item for f in order for item in files[f]]
