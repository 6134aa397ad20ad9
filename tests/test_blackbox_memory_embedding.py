"""Black-box: MEMORY_EMBEDDING changed between two starts of the bot, as the operator reads it."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from agent.memory.chroma_collections import check_embedding
from agent.memory.layout import META_DIM, META_EMBEDDING
from agent.memory.types import EmbeddingMismatch


@pytest.mark.parametrize(
    ("filled_by", "dim", "setting"),
    [
        ("minilm-l6-v2-int8@8199be6f699a", 384, "MEMORY_EMBEDDING=minilm"),
        ("use-multilingual-v3@0db566fd0af8", 512, "MEMORY_EMBEDDING=multilingual"),
        (
            "openai-compatible:nomic-embed-text",
            768,
            "MEMORY_EMBEDDING=openai and MEMORY_EMBEDDING_MODEL=nomic-embed-text",
        ),
    ],
)
def test_blackbox_memory_another_embedding_names_the_exact_setting_that_filled_the_store(
    filled_by: str, dim: int, setting: str
) -> None:
    now = SimpleNamespace(id="openai-compatible:other-model", dim=1024)
    with pytest.raises(EmbeddingMismatch) as err:
        check_embedding(now, "agentbot-mem-shared-003", {META_EMBEDDING: filled_by, META_DIM: dim})
    message = str(err.value)
    assert f"Set {setting} again" in message, message
    assert "\n" not in message  # one line in the log and in /memory's answers
    assert "prefix" not in message  # no setting of that name exists
