"""The judge's prompt and the strict reading of its answer.

One template file (``prompt_template.toml``) holds the wording and its ``version``; every
request a real provider sends is rendered from it, and the version travels on the outcome.
The answer must be exactly ``{"winner": "A"|"B", "confidence": 1-5, "justification": str}``
— anything else raises ``InvalidAnswerError`` carrying the raw text. There is no default
winner: a judge that did not say is a failure, never "Essay A".
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from string import Template
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

from application.lps import InvalidAnswerError, ProviderItem

TEMPLATE_PATH = Path(__file__).with_name("prompt_template.toml")
NOT_GIVEN = "(none given)"

#: the answer's JSON schema, for structured output (OpenAI) and the tool input (Anthropic)
VERDICT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "winner": {"type": "string", "enum": ["A", "B"]},
        "confidence": {"type": "integer", "minimum": 1, "maximum": 5},
        "justification": {"type": "string"},
    },
    "required": ["winner", "confidence", "justification"],
    "additionalProperties": False,
}


@dataclass(frozen=True)
class Prompt:
    system: str
    user: str
    version: str


@dataclass(frozen=True)
class PromptTemplate:
    version: str
    system: str
    user: str

    @classmethod
    def from_text(cls, text: str) -> PromptTemplate:
        data = tomllib.loads(text)
        return cls(version=str(data["version"]), system=data["system"], user=data["user"])

    def render(self, item: ProviderItem) -> Prompt:
        user = Template(self.user).substitute(
            instructions=item.instructions.strip() or NOT_GIVEN,
            rubric=item.rubric.strip() or NOT_GIVEN,
            essay_a=item.essay_a_text,
            essay_b=item.essay_b_text,
        )
        return Prompt(system=self.system, user=user, version=self.version)


@cache
def default_template() -> PromptTemplate:
    return PromptTemplate.from_text(TEMPLATE_PATH.read_text(encoding="utf-8"))


class _Answer(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    winner: Literal["A", "B"]
    confidence: StrictInt = Field(ge=1, le=5)
    justification: StrictStr


@dataclass(frozen=True)
class ReadAnswer:
    winner_id: str
    confidence: int
    justification: str


def read_answer(
    answer: str | dict[str, Any] | None,
    item: ProviderItem,
    *,
    version: str,
    prompt_tokens: int = 0,
    completion_tokens: int = 0,
) -> ReadAnswer:
    """The verdict in ``answer`` (JSON text, or the already-decoded tool input), with "A" /
    "B" turned into the pair's essay ids; ``InvalidAnswerError`` for anything else."""
    raw = answer if isinstance(answer, str) or answer is None else json.dumps(answer)

    def invalid(reason: str) -> InvalidAnswerError:
        return InvalidAnswerError(
            f"the judge's answer is not a verdict: {reason}",
            raw_answer=raw,
            prompt_template_version=version,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
        )

    if answer is None or (isinstance(answer, str) and not answer.strip()):
        raise invalid("the answer is empty")
    if isinstance(answer, str):
        try:
            data = json.loads(answer)
        except json.JSONDecodeError as error:
            raise invalid(f"not JSON ({error.msg} at position {error.pos})") from None
    else:
        data = answer
    try:
        parsed = _Answer.model_validate(data)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'answer'}: {e['msg']}" for e in error.errors()
        )
        raise invalid(problems) from None
    winner_id = item.essay_a if parsed.winner == "A" else item.essay_b
    return ReadAnswer(winner_id, parsed.confidence, parsed.justification)
