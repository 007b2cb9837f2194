"""OpenAI wire types for requests, validated strictly at the door.

Responses travel as plain JSON-shaped dicts: every backend already speaks
OpenAI's format, and re-modelling each chunk on the hot path would only cost time.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

JSON = dict[str, Any]


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow", frozen=True)


class ChatMessage(_Strict):
    """One message of a conversation."""

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[JSON] | None = None
    name: str | None = None
    tool_calls: list[JSON] | None = None
    tool_call_id: str | None = None

    @model_validator(mode="after")
    def _has_content(self) -> ChatMessage:
        if self.content is None and not self.tool_calls and self.role != "assistant":
            msg = f"a {self.role} message needs content"
            raise ValueError(msg)
        return self

    def text(self) -> str:
        """The message's text, joining text parts of multi-part content."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(str(p.get("text", "")) for p in self.content if p.get("type") == "text")


class StreamOptions(_Strict):
    """``stream_options``."""

    include_usage: bool = False


class ResponseFormat(_Strict):
    """``response_format``."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSON | None = None


Stop = str | list[str] | None
NonEmptyText = Annotated[str, Field(min_length=1)]


class _Sampling(_Strict):
    model: str = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    n: int = Field(1, ge=1, le=16)
    stop: Stop = None
    seed: int | None = None
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None

    @model_validator(mode="after")
    def _check_stop(self) -> _Sampling:
        if isinstance(self.stop, list) and len(self.stop) > 4:
            msg = "stop takes at most 4 sequences"
            raise ValueError(msg)
        if self.stream_options is not None and not self.stream:
            msg = "stream_options is only allowed when stream is true"
            raise ValueError(msg)
        return self

    @property
    def include_usage(self) -> bool:
        """Whether a streamed answer ends with a usage chunk."""
        return bool(self.stream_options and self.stream_options.include_usage)

    def stop_list(self) -> list[str]:
        """``stop`` as a list."""
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


class ChatCompletionRequest(_Sampling):
    """``POST /v1/chat/completions``."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    response_format: ResponseFormat | None = None
    tools: list[JSON] | None = None
    tool_choice: str | JSON | None = None

    @property
    def token_limit(self) -> int | None:
        """The completion budget, preferring ``max_completion_tokens``."""
        return self.max_completion_tokens or self.max_tokens

    def prompt_chars(self) -> int:
        """Characters of prompt text, for cheap token estimates."""
        return sum(len(m.text()) for m in self.messages)


class CompletionRequest(_Sampling):
    """``POST /v1/completions``."""

    prompt: NonEmptyText | list[NonEmptyText] = Field(min_length=1)
    echo: bool = False
    suffix: str | None = None

    @property
    def token_limit(self) -> int | None:
        """The completion budget."""
        return self.max_tokens

    def prompts(self) -> list[str]:
        """``prompt`` as a list."""
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)

    def prompt_chars(self) -> int:
        """Characters of prompt text, for cheap token estimates."""
        return sum(len(p) for p in self.prompts())


class EmbeddingRequest(_Strict):
    """``POST /v1/embeddings``."""

    model: str = Field(min_length=1)
    input: str | list[str] = Field(min_length=1)
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    user: str | None = None

    def inputs(self) -> list[str]:
        """``input`` as a list of texts."""
        return [self.input] if isinstance(self.input, str) else list(self.input)

    def prompt_chars(self) -> int:
        """Characters of input text, for cheap token estimates."""
        return sum(len(t) for t in self.inputs())


class Usage(BaseModel):
    """Token counts of one request."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens

    @classmethod
    def from_openai(cls, usage: JSON | None) -> Usage:
        """Read OpenAI's ``usage`` object (missing fields count as zero)."""
        if not usage:
            return cls()
        return cls(
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
        )

    def to_openai(self) -> JSON:
        """OpenAI's ``usage`` object."""
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }
