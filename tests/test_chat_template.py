"""Chat templates: the GGUF's Jinja template rendered in a sandbox, its markers
as single ids, user content as plain text, clear errors, and the system prefix
a server pins in its cache."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from radixserve.chat_template import CHATML_TEMPLATE, ChatTemplate, ChatTemplateError
from radixserve.tokenizer import Tokenizer

SMOL_DEFAULT_SYSTEM = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
content = st.one_of(st.text(max_size=30),
                    st.lists(st.sampled_from(["hi", " ", "\n", "<|im_start|>", "<|im_end|>", "é", "1"]),
                             max_size=6).map("".join))
roles = st.sampled_from(["user", "assistant"])


@pytest.fixture(scope="module")
def smol_tok(bundled_model) -> Tokenizer:
    return Tokenizer.from_model(bundled_model)


@pytest.fixture(scope="module")
def smol(bundled_model, smol_tok) -> ChatTemplate:
    return ChatTemplate.from_model(bundled_model, smol_tok)


def _spellable(tok: Tokenizer, s: str) -> str:
    return "".join(c for c in s if not set(c.encode()) & tok.missing_bytes)


@pytest.mark.bundled
def test_smollm_template_renders_as_huggingface(smol):
    msgs = [{"role": "user", "content": "What is the capital of France?"}]
    assert not smol.is_fallback
    assert smol.render(msgs).text == (SMOL_DEFAULT_SYSTEM + "<|im_start|>user\nWhat is the capital of France?"
                                      "<|im_end|>\n<|im_start|>assistant\n")
    with_system = [{"role": "system", "content": "Be brief."}, *msgs]
    assert smol.render(with_system, add_generation_prompt=False).text.startswith(
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n")


@pytest.mark.bundled
def test_markers_are_single_ids_and_match_llamacpp_tokenization(smol, smol_tok):
    msgs = [{"role": "user", "content": "hi"}]
    prompt = smol.render(msgs)
    ids = smol.encode(msgs)
    assert ids == smol_tok.encode(prompt.text, parse_special=True)  # what llama.cpp's server feeds
    assert ids.count(1) == 3 and ids.count(2) == 2  # <|im_start|> x3, <|im_end|> x2


@pytest.mark.bundled
@given(st.lists(st.tuples(roles, content), min_size=1, max_size=4))
def test_user_content_stays_text(smol, smol_tok, turns):
    msgs = [{"role": r, "content": _spellable(smol_tok, c)} for r, c in turns]
    ids = smol.encode(msgs)
    # exactly the template's markers are special: one <|im_start|> per turn (+ system, + generation)
    assert ids.count(1) == len(msgs) + 2 and ids.count(2) == len(msgs) + 1
    assert smol_tok.decode(ids, special=True) == smol.render(msgs).text
    if not any(smol_tok.has_special_text(m["content"]) for m in msgs):
        assert ids == smol_tok.encode(smol.render(msgs).text, parse_special=True)


@pytest.mark.bundled
@given(st.text(max_size=40), st.lists(st.tuples(roles, content), max_size=3), st.booleans())
def test_system_prefix_is_a_token_prefix_of_every_conversation(smol, smol_tok, system, turns, gen):
    system = _spellable(smol_tok, system)
    prefix = smol.render_system_prefix(system)
    msgs = [{"role": "system", "content": system}] + [
        {"role": r, "content": _spellable(smol_tok, c)} for r, c in turns]
    ids = smol.encode(msgs, add_generation_prompt=gen)
    assert tuple(ids[:len(prefix.ids)]) == prefix.ids
    assert smol.render(msgs, add_generation_prompt=gen).text.startswith(prefix.text)


@pytest.mark.bundled
def test_system_prefix_is_the_system_turn(smol):
    prefix = smol.render_system_prefix("You are a pirate.")
    assert prefix.text == "<|im_start|>system\nYou are a pirate.<|im_end|>"
    assert prefix.ids[0] == 1 and prefix.ids[-1] == 2


def test_chatml_fallback_on_a_model_without_template(tiny_model):
    from radixserve.engine import Model

    model = Model(tiny_model(n_vocab=300))
    tmpl = ChatTemplate.from_model(model)
    assert tmpl.is_fallback and tmpl.source == CHATML_TEMPLATE
    ids = tmpl.encode([{"role": "user", "content": "the <|im_end|>"}])
    assert tmpl.tokenizer.decode(ids, special=True) == \
        "<|im_start|>user\nthe <|im_end|><|im_end|>\n<|im_start|>assistant\n"
    assert ids.count(2) == 1  # the typed marker is text


@pytest.fixture(scope="module")
def tiny_tok(tiny_model) -> Tokenizer:
    from radixserve.engine import Model

    return Tokenizer.from_model(Model(tiny_model(n_vocab=300)))


@pytest.mark.parametrize("source, match", [
    ("{% for m in messages %}{{ m.content }", "does not compile"),
    ("{{ raise_exception('Conversation roles must alternate') }}", "Conversation roles must alternate"),
    ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "chat template failed"),
    ("{{ messages.append(1) }}", "chat template failed"),
    ("{{ messages[5]['content'] + 1 }}", "chat template failed"),
])
def test_broken_or_unsafe_templates_are_clear_errors(tiny_tok, source, match):
    with pytest.raises(ChatTemplateError, match=match):
        ChatTemplate(source, tiny_tok).render([{"role": "user", "content": "hi"}])


@pytest.mark.parametrize("messages, match", [
    ([{"role": "wizard", "content": "hi"}], r"messages\[0\]\.role: unknown role 'wizard'"),
    ([{"role": "user", "content": "a"}, {"role": "user"}], r"messages\[1\]\.content is missing"),
    ([{"role": "user", "content": 3}], r"messages\[0\]\.content must be a string"),
    (["hello"], r"messages\[0\] must be an object"),
    ("hello", "messages must be a list"),
])
def test_bad_messages_are_clear_errors(tiny_tok, messages, match):
    with pytest.raises(ChatTemplateError, match=match):
        ChatTemplate(None, tiny_tok).render(messages)


def test_text_parts_are_joined(tiny_tok):
    tmpl = ChatTemplate(None, tiny_tok)
    parts = [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    assert "\nab<|im_end|>" in tmpl.render([{"role": "user", "content": parts}]).text


def test_template_that_trims_content_still_keeps_it_text(tiny_tok):
    src = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content | trim }}<|im_end|>\n{% endfor %}"
    tmpl = ChatTemplate(src, tiny_tok)
    prompt = tmpl.render([{"role": "user", "content": "  <|im_start|> x  "}], add_generation_prompt=False)
    assert prompt.text == "<|im_start|>user\n<|im_start|> x<|im_end|>\n"
    assert ("<|im_start|> x", False) in prompt.segments
    assert tmpl.encode([{"role": "user", "content": "  <|im_start|> x  "}]).count(1) == 1


def test_template_that_reshapes_content_refuses_markers(tiny_tok):
    tmpl = ChatTemplate("{% for m in messages %}<|im_start|>{{ m.content | upper }}{% endfor %}", tiny_tok)
    assert tmpl.encode([{"role": "user", "content": "hi"}]).count(1) == 1
    with pytest.raises(ChatTemplateError, match="contains a special-token marker"):
        tmpl.encode([{"role": "user", "content": "<|im_end|>"}])


def test_bos_written_by_the_template_is_not_doubled(bundled_model):
    md = {k: bundled_model.metadata[k] for k in bundled_model.metadata.keys()}
    tok = Tokenizer.from_metadata({**md, "tokenizer.ggml.add_bos_token": True, "tokenizer.ggml.bos_token_id": 0})
    tmpl = ChatTemplate("{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}", tok)
    ids = tmpl.encode([{"role": "user", "content": "Hello world"}])
    assert ids == [0, 19556, 905]
