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

``SECONDS`` holds each file's total test time in seconds: per-file sums of a quiet machine's
``pytest -n 10 --dist loadfile --durations=0`` (2026-12-05 21:40, 1,566 tests), times 3 (the scale of the loaded runs it was first measured
in; only their order matters). A file not listed (a new one) counts ``UNLISTED_PER_TEST`` seconds a test: rather early than last, where a slow
one would hold up the end. Re-measure when a file's time changes much; a stale figure only costs balance,
never a result.
"""

from __future__ import annotations

from pathlib import PurePath

import pytest

UNLISTED_PER_TEST = 2.0

SECONDS: dict[str, int] = {
    "test_blackbox_gaps6.py": 141,  # 46.9 s, --durations=0 alone at load 5-8 (2026-12-05 23:31), x3
    "test_blackbox_bot_qa3.py": 140,
    "test_e2e_research.py": 133,
    "test_blackbox_ops4.py": 125,
    "test_blackbox_cli_wire.py": 115,
    "test_e2e_rerun.py": 112,
    "test_restart_process.py": 109,
    "test_e2e_threads.py": 107,
    "test_fault_e2e.py": 104,
    "test_blackbox_threads_followups.py": 104,
    "test_blackbox_cli_settings.py": 99,
    "test_blackbox_resume5.py": 91,
    "test_cli_ask.py": 83,
    "test_classifier_embedding.py": 82,
    "test_blackbox_bot_qa6.py": 82,
    "test_operator_errors.py": 78,
    "test_fetch_security.py": 74,
    "test_shards_e2e.py": 72,
    "test_blackbox_threads_restart.py": 71,
    "test_blackbox_bot_qa4.py": 69,
    "test_backup.py": 67,
    "test_blackbox_bot_qa2.py": 63,
    "test_blackbox_gaps7.py": 60,
    "test_blackbox_gaps9.py": 30,  # 9.9 s, --durations=0 alone at load 8 (2026-12-06 00:14), x3
    "test_blackbox_gaps5.py": 59,
    "test_blackbox_ask_input.py": 59,
    "test_blackbox_operator.py": 58,
    "test_blackbox_readme_cli.py": 55,
    "test_blackbox_sec5.py": 54,
    "test_blackbox_bot_sessions.py": 54,
    "test_blackbox_cli_doctor.py": 54,
    "test_blackbox_scale_migrate.py": 53,
    "test_blackbox_bot_threads.py": 53,
    "test_doctor.py": 52,
    "test_blackbox_bot_qa5.py": 51,
    "test_blackbox_tools_mcp.py": 49,
    "test_e2e_thread_manners.py": 48,
    "test_e2e_attachments.py": 48,
    "test_blackbox_ask_signals.py": 47,
    "test_blackbox_ask_output.py": 46,
    "test_blackbox_bot_mentions.py": 42,
    "test_blackbox_ask3.py": 40,
    "test_settings_isolation.py": 40,
    "test_run_stopping.py": 40,
    "test_e2e_turns.py": 39,
    "test_e2e_mcp.py": 39,
    "test_store_settings.py": 38,
    "test_sandbox_python.py": 38,
    "test_blackbox_memory_server.py": 37,
    "test_memory_embeddings.py": 37,
    "test_memory_store.py": 35,
    "test_blackbox_admin_postgres.py": 35,
    "test_blackbox_bot_qa7.py": 35,
    "test_store_pg.py": 32,
    "test_fetch_pages.py": 32,
    "test_run_quiet.py": 31,
    "test_blackbox_tools_search.py": 30,
    "test_blackbox_admin_store_cli.py": 28,
    "test_blackbox_memory_private.py": 28,
    "test_blackbox_ops3.py": 28,
    "test_security_memory.py": 27,
    "test_e2e_config.py": 27,
    "test_blackbox_scale_run.py": 26,
    "test_blackbox_answers.py": 26,
    "test_quota_enforcement.py": 25,
    "test_security_fetch_domains.py": 24,
    "test_agent_loop.py": 23,
    "test_blackbox_cli_costs.py": 23,
    "test_blackbox_costs2.py": 21,
    "test_blackbox_threads_permissions.py": 22,
    "test_blackbox_sec3.py": 22,
    "test_sandbox_isolation.py": 22,
    "test_e2e_memory.py": 22,
    "test_mcp_tools.py": 22,
    "test_store_sessions.py": 22,
    "test_shard_claim_restart.py": 22,
    "test_blackbox_security2_servers.py": 20,
    "test_blackbox_first_run.py": 20,
    "test_blackbox_ollama.py": 20,
    "test_blackbox_lefts.py": 19,
    "test_e2e_streaming.py": 19,
    "test_e2e_one_model.py": 18,
    "test_memory_server.py": 18,
    "test_e2e_checkpoints.py": 18,
    "test_memory_isolation.py": 18,
    "test_blackbox_admin_settings.py": 18,
    "test_store_full_disk.py": 17,
    "test_shards_fake.py": 17,
    "test_blackbox_sec4.py": 16,
    "test_memory_import.py": 16,
    "test_reader.py": 16,
    "test_ssrf_guard.py": 16,
    "test_e2e_usage.py": 15,
    "test_shards_store.py": 14,
    "test_attachments.py": 14,
    "test_e2e_reader.py": 14,
    "test_prices.py": 14,
    "test_blackbox_readme_backups.py": 14,
    "test_router_tiers.py": 13,
    "test_fake_discord.py": 12,
    "test_blackbox_tools_fetch.py": 12,
    "test_blackbox_ask_tools.py": 12,
    "test_blackbox_scale_shards.py": 12,
    "test_blackbox_security2_tools.py": 11,
    "test_blackbox_memory_import.py": 11,
    "test_turn_outage.py": 11,
    "test_blackbox_ops_doctor.py": 10,
    "test_blackbox_threads_stop.py": 9,
    "test_blackbox_security_fetch.py": 9,
    "test_search_backends.py": 9,
    "test_provider_anthropic.py": 9,
    "test_fetch_fairness.py": 8,
    "test_router_fallback.py": 8,
    "test_blackbox_admin_quotas.py": 8,
    "test_router_research.py": 8,
    "test_provider_gemini.py": 8,
    "test_reasoning_models.py": 7,
    "test_settings_documented.py": 7,
    "test_files_quota.py": 7,
    "test_blackbox_ask4.py": 7,
    "test_blackbox_security_mcp.py": 7,
    "test_e2e_ready_race.py": 7,
    "test_router_hand_down.py": 6,
    "test_library_face.py": 6,
    "test_blackbox_memory_retention.py": 6,
    "test_run_slot_wait.py": 6,
    "test_security_values.py": 5,
    "test_model_transport.py": 5,
    "test_blackbox_memory_tools.py": 5,
    "test_files_workspace.py": 4,
    "test_store_db.py": 4,
    "test_blackbox_usage.py": 4,
    "test_blackbox_left.py": 4,
    "test_blackbox_security2_memory.py": 4,
    "test_blackbox_tools_attachments.py": 4,
    "test_security_redaction.py": 4,
    "test_router_escalation.py": 3,
    "test_blackbox_threads_mentions.py": 3,
    "test_blackbox_memory_commands.py": 3,
    "test_blackbox_scale_doctor.py": 3,
    "test_store_rerun.py": 3,
    "test_splitting.py": 3,
    "test_perf_step_cpu.py": 2,
    "test_pacing_fair.py": 2,
    "test_blackbox_ops_errors.py": 2,
    "test_blackbox_ops_streams.py": 2,
    "test_turn_failed.py": 2,
    "test_retry_policy.py": 2,
    "test_blackbox_ops_settings.py": 1,
    "test_memory_web_answers.py": 1,
    "test_think_blocks.py": 1,
    "test_classifier.py": 1,
    "test_bot_attach.py": 1,
    "test_blackbox_readme_env_example.py": 1,
    "test_bench_arbitrage.py": 1,
    "test_blackbox_security_tools.py": 1,
    "test_blackbox_security_children.py": 1,
    "test_ratelimit_buckets.py": 1,
    "test_blackbox_readme_layout.py": 1,
    "test_bench_routing_path.py": 1,
    "test_thread_header.py": 1,
    "test_blackbox_readme_deploy.py": 1,
    "test_blackbox_memory_embedding.py": 1,
    "test_blackbox_ops5.py": 27,
    "test_blackbox_ask5.py": 3,
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
