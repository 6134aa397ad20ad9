"""Checks of the ``.env`` file itself, before and after pydantic-settings reads it: python-dotenv skips
what it cannot read (and a name that is no setting) with at most a warning, so the default ruled where
the operator meant their own value. ``env_file`` is ``agent.config.ENV_FILE`` (None in tests)."""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping

from pydantic_settings import BaseSettings

from agent.setting_parsers import ConfigError

__all__ = ["MEANT", "check_env_lines", "check_env_names", "hidden_by_environment", "not_utf8"]


def check_env_lines(env_file: str | None) -> None:
    """A line of ``env_file`` python-dotenv cannot read (a quote left open) is a :class:`ConfigError`
    naming the line and its setting, never its value: dotenv skipped it with a warning of its own, twice,
    and the setting read as unset ("OPENAI_API_KEY is not set: put your key in .env", where it was).
    Checked at every parse (``agent.config.parse_settings``), so no reader of settings meets a bad ``.env`` first."""
    if env_file is None or not os.path.lexists(env_file):
        return
    if not os.path.isfile(env_file):  # read as empty: every setting in it was ignored without a word
        raise ConfigError(
            f"{os.path.abspath(env_file)} is not a file (a directory, or a link to nothing: Docker makes a "
            "directory where a bind-mounted file is missing), so its settings would be ignored: make it "
            "the file of settings (see .env.example), or remove it"
        )
    from dotenv.parser import parse_stream

    with open(env_file, encoding="utf-8") as f:
        bindings = list(parse_stream(f))
    bad = next((b.original for b in bindings if b.error), None)
    if bad is not None:
        name = re.match(r"\s*(?:export\s+)?([A-Za-z_]\w*)\s*=", bad.string)
        fix = (
            "close its quote, or write the value without quotes"
            if name
            else "write it as NAME=value, or start a comment with #"
        )
        raise ConfigError(
            f"{env_file} line {bad.line}{f' ({name[1]})' if name else ''} cannot be read: {fix} (see .env.example)"
        )
    set_at: dict[str, int] = {}
    for b in bindings:
        if b.key is None:
            continue
        if (b.value or "").strip():
            set_at[b.key] = b.original.line
        elif b.key in set_at:
            # .env.example pasted below one's own lines: the last line counts, so OPENAI_API_KEY read as
            # unset ("put your key in .env", where it was) and AGENT_MAX_STEPS=20 as the default 12.
            raise ConfigError(
                f"{env_file} line {b.original.line} sets {b.key} empty after line {set_at[b.key]} gave it a "
                "value, and the last line counts (it would read as unset): remove one of the two"
            )


def hidden_by_environment(name: str, env_file: str | None) -> str | None:
    """Why ``name`` reads as unset although ``env_file`` gives it a value: the environment sets it empty
    (``export OPENAI_API_KEY=``, a Compose ``${OPENAI_API_KEY}`` of a shell without it), and the
    environment wins over ``.env`` (README: Settings). "Put your key in .env" sent the operator to a file
    that already had it. None in any other case."""
    value = os.environ.get(name)
    if value is None or value.strip() or env_file is None or not os.path.isfile(env_file):
        return None
    from dotenv import dotenv_values

    try:
        in_file = (dotenv_values(env_file).get(name) or "").strip()
    except (OSError, UnicodeDecodeError):
        return None
    if not in_file:
        return None
    return (
        f"{name} is set but empty in the environment, which hides its value in {env_file} (the environment "
        f"wins over .env): unset it (unset {name}) or remove it from the container's environment"
    )


def not_utf8(e: UnicodeDecodeError, env_file: str | None) -> str:
    """A ``.env`` saved as UTF-16 (Notepad's "Unicode") or Latin-1 fails inside python-dotenv's read."""
    return (
        f"{env_file} is not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start}): "
        "save it as UTF-8 (see .env.example)"
    )


_CHROMA_HOST = "CHROMA_HOST (the host name alone: the port goes in CHROMA_PORT, https is CHROMA_SSL=1)"
MEANT = {
    "OPENAI_API_BASE": "OPENAI_BASE_URL",
    "CHROMA_URL": _CHROMA_HOST,
    "CHROMA_SERVER_HOST": _CHROMA_HOST,
    "CHROMA_SERVER_HTTP_PORT": "CHROMA_PORT",
}
"""Names other tools read for a setting of ours (LangChain's and the old openai library's base URL,
Chroma's client settings). CHROMA_URL was asked "did you mean CHROMA_SSL?", and Chroma's own names
passed unseen: memory stayed in the embedded store beside the Chroma server the operator ran."""


def check_env_names(
    env_file: str | None, *models: type[BaseSettings], environ: Mapping[str, str] | None = None
) -> None:
    """A name in ``env_file`` that is no setting of ``models`` but nearly one (``AGENT_MAX_STEP``,
    ``QUOTA_COST_PER_MONTH``) is a :class:`ConfigError`: it was ignored without a word, so the default
    ruled where the operator meant their own value. Names like no setting (``POSTGRES_PASSWORD``) pass, and
    so do a setting's name with a suffix (``DISCORD_TOKEN_OLD``): a value kept aside on purpose."""
    from dotenv import dotenv_values

    in_file = dotenv_values(env_file, encoding="utf-8") if env_file and os.path.isfile(env_file) else {}
    _check_environment(os.environ if environ is None else environ, {n.upper() for n in in_file})
    known = {f.alias for m in models for f in m.model_fields.values() if f.alias}
    for name in in_file:  # not a file: refused by check_env_lines
        if (upper := name.upper()) in known or any(upper.startswith(f"{k}_") for k in known):
            continue  # a setting, or a deliberate variant of one kept aside (DISCORD_TOKEN_OLD)
        meant = MEANT.get(upper) or next(iter(difflib.get_close_matches(upper, known, n=1, cutoff=0.8)), None)
        if meant:
            raise ConfigError(
                f"{name} in {env_file} is not a setting (it would be ignored): did you mean {meant}? "
                "Rename or remove it (see .env.example)"
            )


def _check_environment(environ: Mapping[str, str], in_file: set[str]) -> None:
    """Another tool's name for a setting of ours set in the environment (``OPENAI_API_BASE`` in a
    Compose ``environment:`` block or a shell profile, as LangChain and LiteLLM read it), while ours is
    set neither there nor in ``.env``: the calls went to api.openai.com (with a key there, paid for)
    instead of the server it names. Near-misses are named only in ``.env``: the environment holds every
    other program's names too."""
    ours = {n.upper() for n, v in environ.items() if v.strip()} | in_file
    for name, value in environ.items():
        meant = MEANT.get(name.upper())
        if meant is None or not value.strip() or meant.split()[0] in ours:
            continue
        raise ConfigError(
            f"{name} is set in the environment, but agentbot does not read it: did you mean {meant}? "
            f"Set {meant.split()[0]} (in .env or the environment), or unset {name}"
        )
