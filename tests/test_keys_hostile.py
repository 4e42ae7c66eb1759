"""`llmkit keys` against a gateway (or something in its place) that answers with hostile data.

The gateway's answers are data: what it says is printed as text (no rich markup, no terminal
escapes), a deeply nested, huge or endless answer is one line with exit 1 (the gateway failed),
never a traceback, and the master key follows no redirect. The servers are real, on 127.0.0.1:
the recorded-shape LiteLLM of test_keys_cli.py, and scripted servers for what LiteLLM would not
send.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from tests.mirror.hostile_http import Answer, Seen, no_egress, serve
from tests.test_keys_cli import MASTER, STACK, FakeLiteLLM, Served, one_line_error, run
from tests.test_keys_cli import serve as serve_litellm

OSC = "\x1b]0;pwned\x07"
CLEAR = "\x1b[2J"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LITELLM_MASTER_KEY", "LLMKIT_GATEWAY_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def gw() -> Iterator[Served]:
    with serve_litellm(FakeLiteLLM()) as served:
        yield served


def no_escapes(text: str) -> None:
    assert "\x1b" not in text and "\x07" not in text and "\x9b" not in text, repr(text)


def test_list_prints_what_the_gateway_says_as_text(gw: Served) -> None:
    gw.fake.add(f"evil[/]{OSC}", {"llmkit_role": f"[bold red]prod{CLEAR}"})
    gw.fake.keys[next(iter(gw.fake.keys))]["models"] = ["[/x]", "m\x9b31m"]
    result = run("list", url=gw.url)
    assert result.exit_code == 0, result.output
    no_escapes(result.stdout + result.stderr)
    for shown in ("evil[/]\\x1b]0;pwned\\x07", "[bold red]prod\\x1b[2J", "[/x], m\\x9b31m"):
        assert shown in result.stdout, (shown, result.stdout)
    as_json = run("list", "--json", url=gw.url)
    no_escapes(as_json.stdout)
    assert json.loads(as_json.stdout)[0]["alias"] == f"evil[/]{OSC}"  # JSON keeps the data, escaped


def test_messages_about_a_key_print_its_fields_as_text(gw: Served) -> None:
    gw.fake.add("search-app", {"llmkit_role": f"production{OSC}"})
    result = run("revoke", "search-app", url=gw.url)
    assert result.exit_code == 0, result.output
    no_escapes(result.stderr)
    assert "role production\\x1b]0;pwned\\x07" in result.stderr


def test_a_new_key_with_control_characters_is_refused_not_printed(gw: Served) -> None:
    answer = {"key": f"sk-abc{OSC}", "token": "a" * 64, "key_alias": "search-app"}
    gw.fake.scripted["/key/generate"] = (
        200,
        json.dumps(answer).encode(),
        {"Content-Type": "application/json"},
    )
    line = one_line_error(run("issue", "production", "--alias", "search-app", *STACK, url=gw.url), 1)
    assert "/key/generate: the answer holds no key" in line
    no_escapes(line)


def test_rotate_due_skips_aliases_it_could_not_use_as_a_file_name(gw: Served, tmp_path: Path) -> None:
    rotating = {"llmkit_role": "production", "rotate_after_seconds": 60}
    gw.fake.add("bad\x00name", rotating, age_s=120)
    gw.fake.add(f"../../x{CLEAR}", rotating, age_s=120)
    result = run("rotate", "--due", "--output-dir", tmp_path / "out", *STACK, url=gw.url)
    assert result.exit_code == 0, result.output
    assert "skipped 'bad\\x00name': not an alias `llmkit keys` issues" in result.stderr
    assert "skipped '../../x\\x1b[2J': not an alias" in result.stderr
    no_escapes(result.stderr)
    assert not list((tmp_path / "out").iterdir()) and gw.fake.issued == []


@pytest.fixture(autouse=True)
def _out(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()


def test_a_deeply_nested_answer_is_one_line(gw: Served) -> None:
    deep = b'{"keys": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    gw.fake.scripted["/key/list"] = (200, deep, {"Content-Type": "application/json"})
    line = one_line_error(run("list", url=gw.url), 1)
    assert f"GET {gw.url}/key/list: HTTP 200: JSON nested too deeply" in line


def test_numbers_out_of_range_are_one_line(gw: Served) -> None:
    gw.fake.scripted["/key/list"] = (200, b'{"keys": [], "total_pages": 1e999}', {})
    line = one_line_error(run("list", url=gw.url), 1)
    assert "the number 1e999 is out of range" in line


def huge(handler: BaseHTTPRequestHandler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Length", str(1 << 30))
    handler.end_headers()
    handler.close_connection = True


def test_an_answer_larger_than_the_bound_is_refused_before_it_is_read() -> None:
    with serve() as gateway:
        gateway.routes["/key/list"] = Answer(stream=huge)
        line = one_line_error(run("list", url=gateway.url), 1)
    assert (
        f"GET {gateway.url}/key/list: the answer is {1 << 30} bytes, more than the 16777216 accepted" in line
    )


def test_paging_stops_where_no_gateway_would_go() -> None:
    def page(seen: Seen) -> Answer:
        number = int(seen.path.split("page=")[1].split("&")[0])
        keys = [{"token": f"{number:064x}", "key_alias": f"k{number}"}] if number <= 1100 else []
        return Answer(200, json.dumps({"keys": keys, "total_pages": 10**9}).encode())

    with serve() as gateway:
        gateway.routes["/key/list"] = page
        line = one_line_error(run("list", url=gateway.url), 1)
        assert len(gateway.seen) == 1000
    assert "reports 1000000000 pages of keys; refused after 1000" in line


def test_the_master_key_follows_no_redirect(monkeypatch: pytest.MonkeyPatch) -> None:
    egress = no_egress(monkeypatch)
    with serve() as gateway, serve() as elsewhere:
        gateway.routes["/key/list"] = Answer(307, headers={"Location": f"{elsewhere.url}/key/list"})
        line = one_line_error(run("list", url=gateway.url), 1)
        assert elsewhere.seen == []
    assert "HTTP 307, a redirect to" in line and "the master key is never sent after a redirect" in line
    assert egress.attempts == []
    assert MASTER not in line
