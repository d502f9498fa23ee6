"""Chat templates: the GGUF's `tokenizer.chat_template` (Jinja2), rendered in a sandbox.

A template turns messages into one prompt string whose markers
("<|im_start|>", "<|im_end|>") must become their single special ids, while
what users wrote must stay plain text — otherwise a user could type a marker
and forge a turn. The template is therefore rendered twice: once with each
message's content replaced by a sentinel, which shows what is template text,
and once for real. The prompt is tokenized as one string in which special
tokens are parsed only in template text (Tokenizer.encode_segments); it
matches llama.cpp's tokenization of the same render token for token whenever
the content itself holds no marker.

    render with sentinels:  <|im_start|>user\\n␂0␃<|im_end|>\\n<|im_start|>assistant\\n
    segments:               [template ...user\\n] [content 0] [template <|im_end|>\\n...]
"""
from __future__ import annotations

import dataclasses
import datetime
import json
from collections.abc import Mapping, Sequence
from typing import Any

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .tokenizer import Tokenizer

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
ROLES = ("system", "user", "assistant")
# Private-use characters that bracket a content sentinel; no real template emits them.
_OPEN, _CLOSE = "\U000F0000", "\U000F0001"
# First characters of user turns used to find where a system prefix stops being shared.
_PROBES = ("a", "Z", "1", " ", "  x", "\n", "\n\n", "!", "<", "'s", "é", "中", "🙂", "\t")


class ChatTemplateError(ValueError):
    """A template that does not compile or fails to render, or a malformed message."""


@dataclasses.dataclass(frozen=True, slots=True)
class ChatPrompt:
    """A rendered conversation: its text and which parts came from the template."""

    text: str
    segments: tuple[tuple[str, bool], ...]  # (text, is_template_text), concatenating to `text`


@dataclasses.dataclass(frozen=True, slots=True)
class PromptPrefix:
    """What every conversation that starts with one system message begins with."""

    text: str
    ids: tuple[int, ...]


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(value: Any, indent: int | None = None, ensure_ascii: bool = False, sort_keys: bool = False) -> str:
    return json.dumps(value, indent=indent, ensure_ascii=ensure_ascii, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.datetime.now().strftime(fmt)


def _environment() -> ImmutableSandboxedEnvironment:
    """Jinja2 as Hugging Face's apply_chat_template configures it, sandboxed."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


def _content_text(i: int, content: Any) -> str:
    """A message's content as a string: a str, or OpenAI-style text parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence) and not isinstance(content, (bytes, bytearray)):
        texts = []
        for part in content:
            if not (isinstance(part, Mapping) and part.get("type") == "text" and isinstance(part.get("text"), str)):
                raise ChatTemplateError(f"messages[{i}].content: only text parts are supported, got {part!r:.60}")
            texts.append(part["text"])
        return "".join(texts)
    raise ChatTemplateError(f"messages[{i}].content must be a string, got {type(content).__name__}")


def validate_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """Messages as {role, content} dicts of strings; a ChatTemplateError names the bad field."""
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise ChatTemplateError("messages must be a list of {role, content} objects")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping):
            raise ChatTemplateError(f"messages[{i}] must be an object with role and content")
        role = m.get("role")
        if role not in ROLES:
            raise ChatTemplateError(f"messages[{i}].role: unknown role {role!r} (expected one of {', '.join(ROLES)})")
        if "content" not in m or m["content"] is None:
            raise ChatTemplateError(f"messages[{i}].content is missing")
        out.append({"role": role, "content": _content_text(i, m["content"])})
    return out


class ChatTemplate:
    """A compiled chat template bound to a tokenizer (for bos/eos text and tokenization)."""

    def __init__(self, source: str | None, tokenizer: Tokenizer) -> None:
        self.is_fallback = not source
        self.source: str = source or CHATML_TEMPLATE
        self.tokenizer = tokenizer
        try:
            self._template = _environment().from_string(self.source)
        except jinja2.TemplateSyntaxError as e:
            raise ChatTemplateError(f"chat template does not compile: {e.message} (line {e.lineno})") from None
        tok = tokenizer
        self.bos_token = tok.tokens[tok.bos_id] if tok.bos_id is not None else ""
        self.eos_token = tok.tokens[tok.eos_id] if tok.eos_id is not None else ""

    @classmethod
    def from_model(cls, model: Any, tokenizer: Tokenizer | None = None) -> ChatTemplate:
        """The model's `tokenizer.chat_template`, or ChatML when it has none."""
        tokenizer = tokenizer or Tokenizer.from_model(model)
        return cls(model.metadata.get("tokenizer.chat_template"), tokenizer)

    def _render_raw(self, messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
        try:
            return self._template.render(messages=messages, add_generation_prompt=add_generation_prompt,
                                         bos_token=self.bos_token, eos_token=self.eos_token)
        except jinja2.TemplateError as e:
            raise ChatTemplateError(f"chat template failed: {e}") from None
        except Exception as e:  # a template bug: TypeError, KeyError... inside Jinja
            raise ChatTemplateError(f"chat template failed: {type(e).__name__}: {e}") from None

    def render(self, messages: Sequence[Mapping[str, Any]], *, add_generation_prompt: bool = True) -> ChatPrompt:
        """Render a conversation, marking which text came from the template."""
        msgs = validate_messages(messages)
        text = self._render_raw(msgs, add_generation_prompt)
        marked = [{"role": m["role"], "content": f"{_OPEN}{i}{_CLOSE}"} for i, m in enumerate(msgs)]
        try:
            skeleton = self._render_raw(marked, add_generation_prompt)
        except ChatTemplateError:
            skeleton = None
        segments = _segments(text, skeleton, [m["content"] for m in msgs]) if skeleton is not None else None
        if segments is None:
            segments = self._unsegmented(text, msgs)
        return ChatPrompt(text, tuple(segments))

    def _unsegmented(self, text: str, msgs: list[dict[str, str]]) -> list[tuple[str, bool]]:
        """The template reshapes content so it cannot be located: safe only if no
        content holds special-token text, in which case parsing everything is exact."""
        tok = self.tokenizer
        for i, m in enumerate(msgs):
            if tok.has_special_text(m["content"]):
                raise ChatTemplateError(
                    f"messages[{i}].content contains a special-token marker and the chat template "
                    "transforms content, so it cannot be kept as plain text")
        return [(text, True)]

    def encode(self, messages: Sequence[Mapping[str, Any]], *, add_generation_prompt: bool = True) -> list[int]:
        """Token ids of the rendered conversation, as llama.cpp's server builds them:
        BOS added when the model asks for it (and not doubled when the template
        already writes it), template markers parsed, content as plain text."""
        return self.encode_prompt(self.render(messages, add_generation_prompt=add_generation_prompt))

    def encode_prompt(self, prompt: ChatPrompt) -> list[int]:
        tok = self.tokenizer
        segments = list(prompt.segments)
        if tok.add_bos and self.bos_token and segments and segments[0][1] \
                and segments[0][0].startswith(self.bos_token):
            segments[0] = (segments[0][0][len(self.bos_token):], True)
        return tok.encode_segments(segments, add_special=True)

    def render_system_prefix(self, system_text: str) -> PromptPrefix:
        """The longest text and token prefix shared by every conversation that opens
        with this system message: the prompt a server pins in its prefix cache.

        Found by rendering the system message followed by user turns that start
        with many kinds of character, then cutting back to the last special
        token, a point no BPE merge crosses; so the ids are a prefix of the
        tokenization of any such conversation, however its next turn begins.
        """
        system = {"role": "system", "content": system_text}
        convs = [([system], False), ([system], True)]
        convs += [([system, {"role": "user", "content": p + "hi"}], True) for p in _PROBES]
        renders = []
        for msgs, gen in convs:
            try:
                renders.append(self.encode(msgs, add_generation_prompt=gen))
            except ChatTemplateError:
                continue
        if len(renders) < 2:
            raise ChatTemplateError("chat template renders no conversation that starts with a system message")
        n = _common_prefix_len(renders)
        ids = renders[0][:n]
        while ids and not self.tokenizer.is_special(ids[-1]):
            ids.pop()
        # text: the ids' own text (markers shown, a BOS the tokenizer adds included)
        return PromptPrefix(self.tokenizer.decode(ids, special=True), tuple(ids))


def _segments(text: str, skeleton: str, contents: list[str]) -> list[tuple[str, bool]] | None:
    """Split `text` into template and content parts using the sentinel render.

    Each sentinel in the skeleton stands for one message's content, as the
    template printed it: the content itself or trimmed. None when the real
    render does not line up with the skeleton.
    """
    parts = skeleton.split(_OPEN)
    out: list[tuple[str, bool]] = []
    pos = 0

    def take_template(piece: str) -> bool:
        nonlocal pos
        if not text.startswith(piece, pos) or _OPEN in piece or _CLOSE in piece:
            return False
        if piece:
            out.append((piece, True))
        pos += len(piece)
        return True

    if not take_template(parts[0]):
        return None
    for part in parts[1:]:
        index, sep, after = part.partition(_CLOSE)
        if not sep or not index.isdigit() or int(index) >= len(contents):
            return None
        content = contents[int(index)]
        for candidate in dict.fromkeys((content, content.strip(), content.lstrip(), content.rstrip())):
            end = pos + len(candidate)
            if text.startswith(candidate, pos) and text.startswith(after, end):
                if candidate:
                    out.append((candidate, False))
                pos = end
                break
        else:
            return None
        if not take_template(after):
            return None
    return out if pos == len(text) else None


def _common_prefix_len(seqs: list[list[int]]) -> int:
    n = min(len(s) for s in seqs)
    first = seqs[0]
    for i in range(n):
        if any(s[i] != first[i] for s in seqs[1:]):
            return i
    return n
