"""Which tier a task needs: a cheap heuristic, optionally a small model as judge.

The heuristic reads only the wording of the ask (no model call, microseconds): what the user asks for
(compare, research, analyse, plan, a report... → complex; explain, summarise, fix, write code, latest
news... → medium; a look-up, a conversion, a greeting → simple), how many things they ask for
(numbered parts, lists of alternatives, several questions), and how long the ask is once quoted or
fenced payload is set aside (a long paragraph to translate is still a simple ask).

It is deliberately conservative: sending a complex task to a small model costs a failed attempt and
an escalation, while sending a simple one to a big model only costs money, so one strong complex cue
plus any sign of substance is enough for ``complex``. ``bench/arbitrage.py`` measures both errors.

The judge (``ROUTER_CLASSIFIER=judge``) asks the cheapest model for one word; if it fails or answers
something else, the heuristic decides, and a task with overwhelming complex cues stays complex.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from agent.events import Usage
from agent.messages import Message
from agent.models.base import Model, ModelError, ModelSettings, final_response
from agent.models.tiers import TIERS, Tier
from agent.models.tokens import estimate_prompt


@dataclass(frozen=True, slots=True)
class Classification:
    """A routing decision and why; ``usage``/``model`` are set when a judge model was called."""

    tier: Tier
    source: str
    """``heuristic``, ``judge``, ``requested`` or ``default``."""
    reasons: tuple[str, ...] = ()
    model: str | None = None
    usage: Usage | None = None
    provider: str | None = None
    """The judge's wire (``anthropic``): the name its API reports carries no ``anthropic:`` prefix."""
    asked: str | None = None
    """The judge's name as called: its price when the name its server reports (an alias) has none."""
    doubtful: bool = False
    """Sent up to its tier with little confidence (the embedding's complex odds below its ``sure_at``): a
    hand-down (``ROUTER_HAND_DOWN_CALLS``) may give the answer to the researcher if the run was short."""


class Classifier(Protocol):
    async def classify(self, task: str) -> Classification: ...


def _rx(*words: str) -> re.Pattern[str]:
    return re.compile(r"(?<!\w)(?:" + "|".join(words) + r")", re.I)


# Cues are stems in English, French, German and Spanish; each names a kind of ask, not a topic.
_COMPLEX = {
    "compare": _rx(
        r"compar", r"contrast", r"versus", r"vs\.?(?!\w)", r"vergleich", r"weigh(?!t)", r"rank(?:ing)?\b"
    ),
    "decide": _rx(
        r"(?<!what )should (?:i|we)\b",
        r"which (?:one|is better|should)",
        r"choos",
        r"figure out (?:if|whether)",
        r"whether",
        r"better to",
        r"worth it",
        r"what are (?:our|my|the) (?:options|alternatives)",
        r"alternatives to",
    ),
    "breadth": _rx(
        r"each (?:one|of)",
        r"for each",
        r"every (?:major|main|single)",
        r"all (?:the )?major",
        r"overview of",
        r"main (?:approaches|interpretations|arguments|theories|schools|options)",
        r"for and against",
        r"reading list",
        r"curat",
        r"compile (?:a|an|the)",
        r"assemble (?:a|an|the)",
        r"each (?:item|entry|option|source)",
        r"which (?:\w+ )?\w{3,}s (?:are|have|do|can|support|offer|let|left|still|actually|made|use)\b",
        r"(?:the|all|any) (?:major|leading|biggest|notable|established) (?:\w+ ){0,3}\w{4,}s\b",
        r"(?:what|how) (?:have|did|do) other (?:\w+ ){0,2}\w+ (?:done|do|handle|use|tried|deal)",
    ),
    "research": _rx(
        r"(?<!trying to )(?<!doing some )(?<!did some )(?<!done some )(?<!my own )research",
        r"investigat",
        r"dig into",
        r"look into",
        r"deep dive",
        r"deep-dive",
        r"recherch",
        r"untersuch",
        r"literature review",
        r"studies",
        r"studien",
        r"estudios",
        r"evidence",
        r"benchmarks",
        r"consensus (?:on|is|among)",
        r"trials",
        r"(?:current |the )?state of (?!the art\b)",
        r"who(?:'s| is| are)? (?:\w+ )?(?:funding|backing|behind|investing in)\b",
    ),
    "analysis": _rx(r"analy[sz]", r"análisis", r"evaluat", r"assess", r"évalu"),
    "report": _rx(
        r"report", r"comprehensive", r"in-depth", r"in depth", r"detailed", r"thorough", r"guide to"
    ),
    "design": _rx(
        r"architect", r"design(?:ing)? (?:a|an|the|our)", r"propose", r"strateg", r"stratég", r"go-to-market"
    ),
    "planning": _rx(
        r"plan (?:a|an|the|our|for)",
        r"migrat",
        r"roadmap",
        r"rollback",
        r"investigation plan",
        r"whole (?:path|process)",
        r"everything (?:i|we) (?:need|should|have) to (?:know|do)",
        r"(?:from )?start to finish",
        r"end[- ]to[- ]end",
    ),
    "trade-offs": _rx(
        r"trade-?offs?", r"pros and cons", r"advantages and disadvantages", r"which would you pick"
    ),
    "history": _rx(
        r"timeline",
        r"history of",
        r"since \d{4}",
        r"depuis \d{4}",
        r"seit \d{4}",
        r"over (?:the )?(?:next |following |last |past )(?:\w+ )?(?:years|decades|centuries)",
        r"over (?:the )?(?:decades|centuries)",
        r"day by day",
        r"year by year",
        r"unfold",
    ),
    "hypothetical": _rx(r"what would happen", r"what if", r"consider"),
    "audit": _rx(r"audit", r"check (?:it|this|them|our \w+) against", r"complian", r"gaps?\b"),
    "sources": _rx(r"cite", r"with sources", r"avec des sources", r"mit quellen", r"con fuentes"),
}
_MEDIUM = {
    "explain": _rx(
        r"explain",
        r"explique",
        r"erklär",
        r"explica",
        r"how (?:do|does|is|can|should|to)(?! you say)",
        r"how (?:\w+ )?works",
        r"why ",
        r"wie funktioniert",
        r"walk me through",
    ),
    "summarise": _rx(r"summari[sz]", r"résum", r"zusammenfass", r"resum"),
    "fresh": _rx(
        r"latest",
        r"news",
        r"updates?\b",
        r"this week",
        r"recent",
        r"lately",
        r"what happened",
        r"last (?:event|week|month|night)",
        r"actualit",
        r"neueste",
        r"últimas",
    ),
    "advice": _rx(r"tips?\b", r"advice", r"what should i", r"recommend", r"best way", r"suggest"),
    "lookup": _rx(r"find ", r"look up", r"search", r"cherche", r"such"),
    "write": _rx(
        r"write (?:a|an|me|the)",
        r"rewrite",
        r"rephrase",
        r"turn this",
        r"script",
        r"function",
        r"query",
        r"one-liner",
        r"itinerar",
        r"step by step",
        r"routine",
    ),
    "debug": _rx(
        r"error", r"exception", r"traceback", r"fails?", r"failing", r"bug", r"fix", r"denied", r"crash"
    ),
    "difference": _rx(r"difference between", r"différence entre", r"unterschied", r"diferencia"),
    "list": _rx(r"what are (?:the )?(?:rules|symptoms|steps|causes|benefits|risks|options)"),
}
_SIMPLE = _rx(
    r"what(?:'s| is) (?:the )?(?:capital|plural|square root|boiling|population|meaning)",
    r"who (?:is|was|wrote)",
    r"when (?:did|was|is)",
    r"what year",
    r"define",
    r"translate",
    r"convert",
    r"how many",
    r"how do you say",
    r"spell",
    r"synonym",
    r"joke",
    r"hi\b",
    r"hello",
    r"hey",
    r"thanks",
    r"thank you",
    r"quelle est",
    r"what time",
    r"wie spät",
    r"cuántos",
)
_BRIEF = _rx(
    r"quick(?:ly)?\b", r"briefly", r"in short", r"in one (?:sentence|line|word)", r"short answer", r"tl;?dr"
)
_QUOTED = re.compile(r"```.*?```|`[^`]*`|\"[^\"]{12,}\"|'[^']{24,}'|“[^”]{12,}”", re.S)
_URL = re.compile(r"https?://\S+")
_NUMBERED = re.compile(r"(?:^|\s)(?:\d{1,2}[.)]|[-*•])\s+\S", re.M)
_WORD = re.compile(r"\w+", re.U)
_ASKS = re.compile(r"\b(?:what|which|how|why|where|who)\b", re.I)


@dataclass(slots=True)
class Signals:
    """What the heuristic saw; kept for the routing decision's ``reasons`` and for tests."""

    words: int
    complex_cues: list[str] = field(default_factory=list)
    medium_cues: list[str] = field(default_factory=list)
    simple_cue: bool = False
    brief: bool = False
    parts: int = 1
    has_code: bool = False
    has_url: bool = False

    @property
    def complex_score(self) -> int:
        score = len(self.complex_cues)
        score += 2 if self.parts >= 3 else 0
        score += 1 if self.parts == 2 and self.words >= 15 else 0
        score += 1 if self.words >= 30 else 0
        score += 1 if self.words >= 55 else 0
        return score - (1 if self.brief else 0)


def signals(task: str) -> Signals:
    payload_free = _QUOTED.sub(" ", task)
    s = Signals(words=len(_WORD.findall(_URL.sub(" ", payload_free))))
    s.complex_cues = [name for name, rx in _COMPLEX.items() if rx.search(payload_free)]
    s.medium_cues = [name for name, rx in _MEDIUM.items() if rx.search(payload_free)]
    s.simple_cue = bool(_SIMPLE.search(payload_free))
    s.brief = bool(_BRIEF.search(payload_free))
    # A short inline span (`chmod 755`) names a thing; code to read or fix is fenced, long or multi-line.
    s.has_code = "```" in task or bool(re.search(r"`[^`]{30,}`|`[^`]*\n[^`]*`", task))
    s.has_url = bool(_URL.search(task))
    numbered = len(_NUMBERED.findall(task))
    questions = payload_free.count("?")
    # "A, B and C" lists of alternatives or aspects (3+ items) and strings of wh-questions count as parts.
    listed = 1
    for seg in re.split(r"[.?!:;]", re.sub(r"\([^)]*\)", " ", payload_free)):
        items = seg.count(",") + 1
        if items >= 4 or (items >= 3 and re.search(r"\b(and|or|et|ou|und|oder|y|o)\b", seg)):
            listed = max(listed, items)
    asks = len(_ASKS.findall(payload_free))
    asks = asks if asks >= 2 else 1
    s.parts = max(numbered, questions, listed if listed >= 3 else 1, asks, 1)
    return s


def heuristic_tier(task: str) -> tuple[Tier, tuple[str, ...]]:
    """The heuristic decision and its reasons (plain words, shown to admins)."""
    s = signals(task)
    reasons: list[str] = []
    if s.complex_cues:
        reasons.append("asks to " + "/".join(s.complex_cues))
    if s.parts >= 3:
        reasons.append(f"{s.parts} parts")
    if s.words >= 30:
        reasons.append(f"{s.words} words")
    substance = s.words >= 8 or s.parts >= 3 or bool(s.medium_cues)
    # Length alone is not work (a chatty message around one question): it takes a complex cue or 3+ parts.
    enough = s.complex_score >= 2 and (bool(s.complex_cues) or s.parts >= 3)
    if enough or (s.complex_cues and substance and not s.brief):
        return "complex", tuple(reasons)
    if (
        s.complex_cues
        or s.medium_cues
        or s.has_code
        or s.has_url
        or s.words >= 20
        or (s.words >= 12 and not s.simple_cue)
    ):
        reasons = [f"needs to {'/'.join(s.medium_cues)}"] if s.medium_cues else []
        if s.has_code:
            reasons.append("contains code")
        if s.has_url:
            reasons.append("links a page")
        if not reasons:
            reasons.append(f"{s.words} words")
        return "medium", tuple(reasons)
    return "simple", ("a short look-up or chat",) if s.simple_cue or s.words < 12 else ()


class HeuristicClassifier:
    """Routes on wording alone (see the module docstring)."""

    def classify_now(self, task: str) -> Classification:
        tier, reasons = heuristic_tier(task)
        return Classification(tier, "heuristic", reasons)

    async def classify(self, task: str) -> Classification:
        return self.classify_now(task)


JUDGE_PROMPT = """You route requests sent to a research assistant that can search the web, read pages and run code.
Decide how much work the request needs and answer with exactly one word:
simple - a fact, definition, conversion, translation or small talk; one step.
medium - an explanation, a summary, a how-to, a small piece of code or a fix, or news on one topic; a few steps.
complex - research across several sources, comparisons, analyses, plans, designs or reports; many steps.
Answer simple, medium or complex."""

_TIER_WORD = re.compile(r"\b(simple|medium|complex)\b", re.I)


class JudgeClassifier:
    """Asks ``model`` (meant to be the cheapest configured) for the tier; the heuristic backs it up.

    Args:
        model: the judge. Its usage is returned in the :class:`Classification` so it can be billed.
        keep_complex_score: a heuristic complex score this high is kept even if the judge says less,
            so a terse judge cannot under-route an obviously large task.
    """

    def __init__(self, model: Model, *, keep_complex_score: int = 4, max_task_chars: int = 4000) -> None:
        self.model = model
        self.keep_complex_score = keep_complex_score
        self.max_task_chars = max_task_chars
        self.fallback = HeuristicClassifier()

    def _messages(self, task: str) -> Sequence[Message]:
        return [Message("system", JUDGE_PROMPT), Message("user", task[: self.max_task_chars])]

    def cut_usage(self, task: str) -> Usage:
        """What a judge call on ``task`` cut under way (a Stop while a follow-up routes) was billed, counted
        locally: its prompt (the answer, one word, was not read). Charged by ``bot.assembly``."""
        return Usage(estimate_prompt(self._messages(task)), 0, 0, 1, estimated=True)

    async def classify(self, task: str) -> Classification:
        heuristic = self.fallback.classify_now(task)
        messages = self._messages(task)
        try:
            # Picking one word out of three needs no deliberation: a judge that thinks by default (gpt-5-nano,
            # the cheapest OpenAI model) would bill hundreds of reasoning tokens per ask at medium effort.
            response = await final_response(
                self.model,
                messages,
                ModelSettings(stream=False, temperature=None, reasoning_effort="minimal"),
            )
        except ModelError as e:
            return replace(heuristic, reasons=(*heuristic.reasons, f"judge failed: {e.status or 'error'}"))
        if response is None:
            return heuristic
        judged = replace(
            heuristic,
            model=response.model,
            usage=response.usage,
            provider=self.model.provider,
            asked=self.model.name,
        )
        m = _TIER_WORD.search(response.message.content)
        if not m:
            return replace(judged, reasons=(*heuristic.reasons, "judge gave no tier"))
        tier: Tier = m.group(1).lower()  # type: ignore[assignment]
        if (
            TIERS.index(tier) < TIERS.index("complex")
            and signals(task).complex_score >= self.keep_complex_score
        ):
            return replace(judged, tier="complex", reasons=(*heuristic.reasons, f"judge said {tier}"))
        # The name called, not the one the server reported (any proxy sets that; a masked link in it
        # showed in the thread's routing note, in the bot's words).
        return replace(judged, tier=tier, source="judge", reasons=(f"{self.model.name} said {tier}",))
