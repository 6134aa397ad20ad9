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

``SECONDS`` holds each file's total test time in seconds: per-file sums of ``pytest -n 10 --dist loadfile
--durations=0``, the mean of two runs on a fresh clone (2026-12-05 23:36 and 23:53, 1,568 tests; the machine
was not quiet, load average 5-12), times 1.96 so the total stays on the scale used so far (a quiet run's
times 3; only the order matters). A file not listed (a new one) counts ``UNLISTED_PER_TEST`` seconds a test: rather early than last, where a slow
one would hold up the end. Re-measure when a file's time changes much; a stale figure only costs balance,
never a result. Entries marked "rescaled (session 13)" are their old figure times the ratio of the file's
test time in two whole ``-n 2 --durations=0`` runs side by side, before and after that session's changes
to the suite (the short write window, PostgreSQL in memory, warm commands), so they stay on this scale.
"""

from __future__ import annotations

from pathlib import PurePath

import pytest

UNLISTED_PER_TEST = 2.0

SECONDS: dict[str, int] = {
    "test_blackbox_deploy13.py": 45,  # new this session: 15 tests, 14.8 s alone at load 5 (the worker's PostgreSQL ~8 s of it) x3
    "test_blackbox_memory13.py": 69,  # new this session: its own measure (22.8 s, 10 tests) x3
    "test_blackbox_servers13.py": 45,  # new this session: its own measure (20 s) x3
    "test_blackbox_manners13b.py": 36,  # new this session: its own measure (31 s, thread write pacing) x3
    "test_blackbox_manners13.py": 30,  # new this session: its own measure (14.8 s) x3
    "test_blackbox_hostile13.py": 45,  # new this session: its own measure (15.0 s, 15 tests, load 7) x3
    "test_blackbox_ask13.py": 43,  # new in session 13: its own measure (14.2 s) x3
    "test_blackbox_sandbox13.py": 40,  # new this session: its own measure (7.5 s quiet, 18 s at load 9) x3
    "test_blackbox_harden.py": 29,  # new this session: its own measure (9.8 s) x3
    "test_blackbox_compat13.py": 36,  # new this session: its own measure (11.5 s, 15 tests) x3
    "test_blackbox_restarts13.py": 90,  # new this session: its own measure (29.7 s, 2 tests) x3
    "test_blackbox_charge13.py": 26,  # new in session 13: its own measure (8.5 s, 6 tests, load 5) x3
    "test_blackbox_charge.py": 29,  # rescaled (session 13)
    "test_blackbox_gaps9.py": 30,  # new this session: its own measure x3
    "test_blackbox_ops7.py": 4,  # new this session: its own measure x3
    "test_blackbox_gaps8.py": 21,  # new this session: its own measure x3
    "test_blackbox_gaps6.py": 106,  # rescaled (session 13)
    "test_blackbox_gaps7.py": 60,  # new this session: its own measure x3
    "test_blackbox_bot_qa7.py": 28,  # rescaled (session 13)
    "test_blackbox_bot_qa8.py": 33,  # rescaled (session 13)
    "test_blackbox_costs2.py": 16,  # rescaled (session 13)
    "test_blackbox_ops5.py": 21,  # rescaled (session 13)
    "test_blackbox_ask5.py": 3,  # new this session: its own measure x3
    "test_blackbox_ask6.py": 4,  # new this session: its own measure x3
    "test_perf_step_cpu.py": 2,  # new this session: its own measure x3
    "test_cpu_per_step.py": 2,  # new this session: its own measure x3
    "test_cpu13.py": 11,  # new this session: its own measure x3 (3.5 s with PostgreSQL's start)
    "test_blackbox_mcp13.py": 27,  # new this session: its own measure x3 (7.6-8.7 s, 10 tests, 2 cores shared)
    "test_doctor.py": 131,
    "test_blackbox_cli_wire.py": 129,
    "test_blackbox_resume5.py": 123,
    "test_blackbox_tools_mcp.py": 122,
    "test_classifier_embedding.py": 112,
    "test_operator_errors.py": 110,
    "test_memory_store.py": 99,
    "test_shards_e2e.py": 98,
    "test_blackbox_bot_qa3.py": 48,  # rescaled (session 13)
    "test_e2e_research.py": 44,  # rescaled (session 13)
    "test_fetch_security.py": 88,
    "test_blackbox_operator.py": 87,
    "test_cli_ask.py": 21,  # rescaled (session 13)
    "test_blackbox_threads_restart.py": 84,
    "test_backup.py": 82,
    "test_fault_e2e.py": 59,  # rescaled (session 13)
    "test_blackbox_cli_settings.py": 79,
    "test_restart_process.py": 79,
    "test_blackbox_bot_qa6.py": 33,  # rescaled (session 13)
    "test_e2e_rerun.py": 34,  # rescaled (session 13)
    "test_e2e_threads.py": 19,  # rescaled (session 13)
    "test_blackbox_threads_followups.py": 55,  # rescaled (session 13)
    "test_blackbox_ops4.py": 67,
    "test_blackbox_bot_qa4.py": 35,  # rescaled (session 13)
    "test_blackbox_ops3.py": 62,
    "test_blackbox_ask_signals.py": 57,
    "test_settings_isolation.py": 57,
    "test_blackbox_ask3.py": 56,
    "test_e2e_mcp.py": 56,
    "test_blackbox_ask_output.py": 52,
    "test_blackbox_sec5.py": 24,  # rescaled (session 13)
    "test_blackbox_admin_postgres.py": 31,  # rescaled (session 13)
    "test_blackbox_gaps5.py": 39,  # rescaled (session 13)
    "test_e2e_thread_manners.py": 23,  # rescaled (session 13)
    "test_memory_embeddings.py": 50,
    "test_run_stopping.py": 50,
    "test_blackbox_bot_qa2.py": 15,  # rescaled (session 13)
    "test_blackbox_cli_doctor.py": 49,
    "test_store_settings.py": 27,  # rescaled (session 13)
    "test_blackbox_memory_server.py": 47,
    "test_blackbox_scale_migrate.py": 27,  # rescaled (session 13)
    "test_blackbox_answers.py": 42,
    "test_blackbox_bot_qa5.py": 18,  # rescaled (session 13)
    "test_sandbox_python.py": 40,
    "test_blackbox_bot_threads.py": 10,  # rescaled (session 13)
    "test_blackbox_bot_sessions.py": 27,  # rescaled (session 13)
    "test_blackbox_bot_mentions.py": 36,
    "test_blackbox_readme_cli.py": 36,
    "test_e2e_turns.py": 36,
    "test_blackbox_scale_run.py": 35,
    "test_blackbox_tools_search.py": 35,
    "test_e2e_attachments.py": 19,  # rescaled (session 13)
    "test_store_pg.py": 28,  # rescaled (session 13)
    "test_fetch_pages.py": 31,
    "test_blackbox_ask_input.py": 30,
    "test_blackbox_scale_qa.py": 30,
    "test_blackbox_sec3.py": 28,
    "test_blackbox_memory_private.py": 27,
    "test_e2e_config.py": 10,  # rescaled (session 13)
    "test_run_quiet.py": 25,
    "test_blackbox_admin_store_cli.py": 24,
    "test_security_memory.py": 23,
    "test_blackbox_cli_costs.py": 22,
    "test_e2e_memory.py": 17,  # rescaled (session 13)
    "test_mcp_tools.py": 22,
    "test_memory_import.py": 22,
    "test_bot_attach.py": 20,
    "test_e2e_reader.py": 20,
    "test_shard_claim_restart.py": 12,  # rescaled (session 13)
    "test_memory_server.py": 18,
    "test_sandbox_isolation.py": 18,
    "test_blackbox_lefts.py": 17,
    "test_memory_isolation.py": 17,
    "test_agent_loop.py": 16,
    "test_blackbox_admin_settings.py": 3,  # rescaled (session 13)
    "test_blackbox_threads_permissions.py": 4,  # rescaled (session 13)
    "test_e2e_usage.py": 4,  # rescaled (session 13)
    "test_quota_enforcement.py": 6,  # rescaled (session 13)
    "test_think_blocks.py": 16,
    "test_blackbox_ollama.py": 15,
    "test_reader.py": 15,
    "test_blackbox_security2_servers.py": 14,
    "test_e2e_checkpoints.py": 8,  # rescaled (session 13)
    "test_ssrf_guard.py": 14,
    "test_store_sessions.py": 7,  # rescaled (session 13)
    "test_blackbox_first_run.py": 3,  # rescaled (session 13)
    "test_blackbox_memory_import.py": 13,
    "test_e2e_one_model.py": 3,  # rescaled (session 13)
    "test_blackbox_sec4.py": 9,  # rescaled (session 13)
    "test_e2e_streaming.py": 12,
    "test_store_full_disk.py": 12,
    "test_shards_fake.py": 11,
    "test_attachments.py": 10,
    "test_blackbox_scale_shards.py": 2,  # rescaled (session 13)
    "test_prices.py": 10,
    "test_store_rerun.py": 4,  # rescaled (session 13)
    "test_blackbox_security2_tools.py": 9,
    "test_fake_discord.py": 9,
    "test_blackbox_readme_backups.py": 8,
    "test_blackbox_security2_memory.py": 8,
    "test_fetch_fairness.py": 8,
    "test_security_fetch_domains.py": 8,
    "test_shards_store.py": 3,  # rescaled (session 13)
    "test_startup_imports.py": 8,
    "test_turn_outage.py": 8,
    "test_blackbox_admin_quotas.py": 7,
    "test_blackbox_readme_env_example.py": 7,
    "test_blackbox_threads_stop.py": 7,
    "test_provider_gemini.py": 7,
    "test_thread_header.py": 7,
    "test_blackbox_memory_retention.py": 6,
    "test_blackbox_ops_doctor.py": 6,
    "test_blackbox_tools_fetch.py": 6,
    "test_files_workspace.py": 6,
    "test_reasoning_models.py": 6,
    "test_router_fallback.py": 6,
    "test_blackbox_ask4.py": 5,
    "test_blackbox_ask_tools.py": 5,
    "test_blackbox_security_fetch.py": 5,
    "test_blackbox_security_mcp.py": 5,
    "test_classifier.py": 5,
    "test_files_quota.py": 5,
    "test_library_face.py": 5,
    "test_model_transport.py": 5,
    "test_provider_anthropic.py": 5,
    "test_router_hand_down.py": 5,
    "test_search_backends.py": 5,
    "test_blackbox_left.py": 4,
    "test_e2e_ready_race.py": 4,
    "test_run_slot_wait.py": 4,
    "test_splitting.py": 4,
    "test_blackbox_memory_tools.py": 1,  # rescaled (session 13)
    "test_blackbox_ops_errors.py": 3,
    "test_blackbox_ops_settings.py": 3,
    "test_blackbox_scale_doctor.py": 1,  # rescaled (session 13)
    "test_blackbox_tools_attachments.py": 1,  # rescaled (session 13)
    "test_blackbox_usage.py": 1,  # rescaled (session 13)
    "test_router_escalation.py": 3,
    "test_router_research.py": 3,
    "test_settings_documented.py": 3,
    "test_bench_routing_path.py": 2,
    "test_blackbox_memory_commands.py": 1,  # rescaled (session 13)
    "test_blackbox_security_tools.py": 2,
    "test_blackbox_threads_mentions.py": 2,
    "test_memory_web_answers.py": 2,
    "test_pacing_fair.py": 2,
    "test_ratelimit_buckets.py": 2,
    "test_retry_policy.py": 2,
    "test_router_tiers.py": 2,
    "test_security_redaction.py": 2,
    "test_security_values.py": 2,
    "test_store_db.py": 2,
    "test_turn_failed.py": 1,  # rescaled (session 13)
    "test_bench_arbitrage.py": 1,
    "test_blackbox_memory_embedding.py": 1,
    "test_blackbox_ops_streams.py": 1,
    "test_blackbox_readme_deploy.py": 1,
    "test_blackbox_readme_layout.py": 1,
    "test_readme_claims.py": 2,
    "test_blackbox_security_children.py": 1,
    "test_quota_limits.py": 1,
}


def estimate(path: str, tests: int) -> float:
    """Seconds the file at ``path`` (a node id's file part) is expected to take."""
    return SECONDS.get(PurePath(path).name, UNLISTED_PER_TEST * tests)


def order_files_first(config: pytest.Config) -> None:
    """Called from tests/conftest.py's ``pytest_configure``."""
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
