"""A mirror Modelfile is data: the models deploy parses it as Ollama does, keeps only whitelisted
directives and writes the host's Modelfile anew.

Crafted Modelfiles, as a hostile mirror (or a registry's params/template layers turned into a
Modelfile by ``llmkit mirror pull``) would serve them: a newline or a carriage return that starts
an ``ADAPTER`` line, an open ``SYSTEM \"\"\"``, characters Ollama drops to close a block early.
Each is refused by the parser port and, through the deploy on pyinfra's ``@fake`` connector,
before any command reaches the host. The accepted ones are written back in a form that parses
back to the same directives.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from llmkit.errors import ConfigError
from llmkit.lab import tiny_model
from playbooks.deploys import models as md
from tests.playbooks.test_ollama import FREE_PLENTY, MIRROR_MODEL, host_sends, listed, run_deploy

STAGE = "/var/lib/ollama/llmkit-staging/phi35-local_latest"
GGUF_PATH = f"{STAGE}/Phi-3.5-mini-instruct-Q4_K_M.gguf"
URL = "file:///srv/mirror/gguf/phi35.Modelfile"

# (Modelfile text, what the refusal says)
CRAFTED = {
    # a params value holding a newline: the next line is a directive of its own
    "newline-adapter": ('PARAMETER stop "<|end|>"\nADAPTER /var/lib/ollama/evil.gguf\n', "line 2: ADAPTER"),
    "lowercase-adapter": ("TEMPLATE {{ .Prompt }}\nadapter ./lora.gguf\n", "line 2: ADAPTER"),
    # Ollama ends a line at a carriage return as well
    "carriage-return-adapter": ("SYSTEM be nice\rADAPTER /tmp/x.gguf\n", "line 2: ADAPTER"),
    "open-system": ('SYSTEM """You are helpful.\nMore text\n', 'SYSTEM value opens """ and never closes'),
    "open-template-at-eof": ('TEMPLATE """{{ .Prompt }}', 'TEMPLATE value opens """ and never closes'),
    "open-double-quote": ('SYSTEM "unfinished\n', 'SYSTEM value opens " and never closes'),
    # a zero-width space is dropped by Ollama (not printable): ""<ZWSP>" closes the block
    "zero-width-close": ('SYSTEM """abc""\u200b"\nADAPTER /x.gguf\n', "line 2: ADAPTER"),
    # text after the closing quotes keeps the block open in Ollama's parser; a later line closes it
    "resync": ('SYSTEM """a"""é\nTEMPLATE """\nADAPTER /evil\nSYSTEM x"""\n', 'holds """'),
    "unknown-parameter": ("PARAMETER num_gqa 8\n", "PARAMETER num_gqa is not accepted"),
    "parameter-case": ("PARAMETER NUM_CTX 8\n", "PARAMETER NUM_CTX is not accepted"),
    "multiline-parameter": ('PARAMETER stop """a\nb"""\n', "PARAMETER stop needs a value on its line"),
    "message-role": ("MESSAGE tool {}\n", "MESSAGE role 'tool'"),
    "renderer": ("RENDERER qwen3-coder\n", "line 1: RENDERER is not accepted"),
    "parser": ("PARSER harmony\n", "line 1: PARSER is not accepted"),
    "unknown-directive": ("REQUIRES 0.99.0\n", "'REQUIRES' is not a Modelfile directive"),
    "name-without-value": ("SYSTEM\n", "a directive's name is letters"),
}


@pytest.mark.parametrize(("text", "problem"), CRAFTED.values(), ids=CRAFTED.keys())
def test_crafted_mirror_modelfiles_are_refused(text: str, problem: str) -> None:
    with pytest.raises(md.ModelfileError) as caught:
        md.merged_modelfile(GGUF_PATH, text, ())
    assert problem in str(caught.value), caught.value


@pytest.mark.parametrize(("text", "problem"), CRAFTED.values(), ids=CRAFTED.keys())
def test_the_deploy_refuses_them_before_any_command(text: str, problem: str) -> None:
    body = text.encode()
    model = {
        **MIRROR_MODEL,
        "modelfile": {"file": "gguf/phi35.Modelfile", "sha256": hashlib.sha256(body).hexdigest()},
    }
    data = {"models": [model], "models_mirror_url": "file:///srv/mirror"}
    with pytest.raises(ConfigError) as caught:
        run_deploy(md.models, data, {**listed(), **FREE_PLENTY, **host_sends(URL, body)})
    message = str(caught.value)
    assert message.startswith("@fake/gpu-1: models[0].modelfile: mirror Modelfile"), message
    assert problem in message and URL in message


def test_the_whitelist_and_ollamas_own_reading_of_accepted_files() -> None:
    text = (
        "# a comment, and blank lines\n\n"
        "  FROM ./model.gguf\n"
        'TEMPLATE """{{ if .System }}{{ .System }}{{ end }}\n{{ .Prompt }}"""\n'
        'SYSTEM "You are terse."\n'
        "PARAMETER temperature 0.6\n"
        'PARAMETER stop "<|end|>"\n'
        'PARAMETER stop "a b"\n'
        'MESSAGE user """Hi\nthere"""\n'
        "MESSAGE assistant Hello\n"
        'LICENSE """MIT\n\nPermission is hereby granted"""\n'
    )
    parsed = [(d.name, d.key, d.value) for d in md.parse_modelfile(text)]
    assert parsed == [
        ("from", None, "./model.gguf"),
        ("template", None, "{{ if .System }}{{ .System }}{{ end }}\n{{ .Prompt }}"),
        ("system", None, "You are terse."),
        ("parameter", "temperature", "0.6"),
        ("parameter", "stop", "<|end|>"),
        ("parameter", "stop", "a b"),
        ("message", "user", "Hi\nthere"),
        ("message", "assistant", "Hello"),
        ("license", None, "MIT\n\nPermission is hereby granted"),
    ]
    merged = md.merged_modelfile(
        "/stage/m.gguf", text, md.parse_directives("PARAMETER num_ctx 64", from_allowed=False)
    )
    assert merged == (
        "FROM /stage/m.gguf\n"
        'TEMPLATE """{{ if .System }}{{ .System }}{{ end }}\n{{ .Prompt }}"""\n'
        'SYSTEM """You are terse."""\n'
        "PARAMETER temperature 0.6\n"
        "PARAMETER stop <|end|>\n"
        'PARAMETER stop "a b"\n'
        'MESSAGE user """Hi\nthere"""\n'
        "MESSAGE assistant Hello\n"
        'LICENSE """MIT\n\nPermission is hereby granted"""\n'
        "PARAMETER num_ctx 64\n"
    )
    # written back, it reads as the same directives (the FROM is ours)
    again = [(d.name, d.key, d.value) for d in md.parse_modelfile(merged)]
    assert again == [("from", None, "/stage/m.gguf"), *parsed[1:], ("parameter", "num_ctx", "64")]


@pytest.mark.parametrize(
    "value",
    [
        '"quoted"',
        'ends with a quote"',
        'two ""',
        "  spaced  ",
        "",
        "\nleading newline",
        'x""\ny',
        "tab\there",
    ],
)
def test_awkward_values_are_written_so_that_they_read_back_the_same(value: str) -> None:
    for directive in (md.Directive("system", value), md.Directive("message", value, "user")):
        text = md.render_modelfile("/m.gguf", [directive])
        (back,) = md.parse_modelfile(text)[1:]
        assert (back.name, back.key, back.value) == (directive.name, directive.key, directive.value)
    if "\n" not in value and value.strip():
        text = md.render_modelfile("/m.gguf", [md.Directive("parameter", value, "stop")])
        assert md.parse_modelfile(text)[1].value == value


def test_the_lab_models_mirror_modelfile_is_accepted() -> None:
    """What `llmkit lab` publishes (and `llmkit mirror pull` writes) passes unchanged in meaning."""
    text = tiny_model.modelfile_text()
    merged = md.merged_modelfile("/stage/tiny-r1.gguf", text, ())
    directives = md.parse_modelfile(merged)
    assert directives[1].name == "template" and directives[1].value == tiny_model.TEMPLATE
    assert [d.value for d in directives if d.key == "stop"] == [
        tiny_model.BOS,
        tiny_model.EOS,
        tiny_model.USER,
        tiny_model.ASSISTANT,
    ]


@pytest.mark.parametrize(
    ("modelfile", "problem"),
    [
        ("SYSTEM hi\nADAPTER /x.gguf", "line 2: ADAPTER is not accepted"),
        ("FROM /etc/shadow", "FROM is written by llmkit"),
        ('SYSTEM """open', "never closes"),
        ("PARAMETER num_gqa 8", "PARAMETER num_gqa is not accepted"),
    ],
)
def test_inline_host_data_directives_follow_the_same_whitelist(modelfile: str, problem: str) -> None:
    data: dict[str, Any] = {
        "models": [{**MIRROR_MODEL, "modelfile": modelfile}],
        "models_mirror_url": "https://mirror.internal/",
    }
    with pytest.raises(ConfigError, match=r"models\[0\]\.modelfile") as caught:
        md.model_specs(data)
    assert problem in str(caught.value)


def test_inline_directives_and_context_length() -> None:
    data = {
        "models": [{**MIRROR_MODEL, "modelfile": "SYSTEM be brief\nPARAMETER temperature 0.2"}],
        "models_mirror_url": "https://mirror.internal/",
    }
    (spec,) = md.model_specs(data)
    assert md.modelfile_text("/m.gguf", spec.directives) == (
        'FROM /m.gguf\nSYSTEM """be brief"""\nPARAMETER temperature 0.2\nPARAMETER num_ctx 8192\n'
    )
    with pytest.raises(ConfigError, match=r"models\[0\]\.context_length"):
        md.model_specs({**data, "models": [{**MIRROR_MODEL, "context_length": "8k"}]})
