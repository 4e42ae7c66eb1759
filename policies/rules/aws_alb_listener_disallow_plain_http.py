"""An HTTP listener only redirects to HTTPS: it never serves a request in cleartext.

Both the listener's default actions and the actions of every listener rule attached to it
(``listenerArn``) are read: a rule that forwards on the HTTP listener would serve its requests
in cleartext even when the default action redirects. A listener without ``protocol`` is HTTP
(the AWS default for an Application Load Balancer) unless it has no ``port`` either: that is a
Gateway Load Balancer's listener, which has neither.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from llmkit.policy import Resource, Rule, Stack, as_list, known
from policies.support import LISTENERS

LISTENER_RULES = ("aws:lb/listenerRule:ListenerRule", "aws:alb/listenerRule:ListenerRule")


def _problems(actions: Any) -> Iterator[str]:
    """What is wrong with a list of actions on an HTTP listener (nothing when all redirect to HTTPS)."""
    listed = as_list(actions)
    if not listed:
        yield "has no action: give it a redirect to HTTPS"
        return
    for action in listed:
        action = known(action) or {}
        kind = known(action.get("type"))
        if kind != "redirect":
            yield f"has a {kind} action: an HTTP listener only redirects to HTTPS"
            continue
        protocol = known((known(action.get("redirect")) or {}).get("protocol"))
        if str(protocol).upper() != "HTTPS":
            shown = protocol if protocol else "unset (#{protocol}, the request's own)"
            yield f"redirects with protocol {shown}: redirect to protocol HTTPS"


def _is_http(listener: Resource) -> bool:
    protocol = listener.get("protocol")
    if protocol is None:
        return listener.get("port") is not None
    return str(protocol).upper() == "HTTP"


def check(stack: Stack, config: Mapping[str, Any]) -> Iterator[tuple[Resource, str]]:
    listeners = [listener for listener in stack.of_type(*LISTENERS) if _is_http(listener)]
    for listener in listeners:
        for problem in _problems(listener.get("defaultActions")):
            yield listener, f"HTTP listener on port {listener.get('port')} {problem}"
    if not listeners:
        return
    for rule in stack.of_type(*LISTENER_RULES):
        listener_arn = rule.get("listenerArn")
        parent = next((lis for lis in listeners if stack.refers_to(listener_arn, lis)), None)
        if parent is None:
            continue
        for problem in _problems(rule.get("actions")):
            yield rule, f"rule on HTTP listener {parent.name} {problem}"


RULE = Rule(
    name="aws-alb-listener-disallow-plain-http",
    description="HTTP listeners and their listener rules only redirect to HTTPS.",
    why="A request served over HTTP carries the API key, the prompt and the completion in cleartext to "
    "anyone on the path.",
    severity="high",
    remediation="Give the HTTP listener a single default action of type redirect with protocol HTTPS and "
    "port 443 (ReverseProxy does), and attach forwarding rules to the HTTPS listener only.",
    frameworks=("AWS FSBP ELB.1", "HIPAA 164.312(e)(1)", "GDPR Art. 32(1)(a)"),
    check_stack=check,
)
