"""One module per rule, named after it: ``aws-kms-key-enable-rotation`` is ``aws_kms_key_enable_rotation.py``.

Each module defines ``RULE``, an :class:`llmkit.policy.Rule`; :func:`load_rules` finds them all.
The rules import the engine (:mod:`llmkit.policy`); the engine never imports them: whoever runs
it (``llmkit policy check``, ``llmkit plan``, the CrossGuard pack) passes ``load_rules()`` in.
"""

from __future__ import annotations

import importlib
import pkgutil

from llmkit.policy import Rule


def load_rules() -> list[Rule]:
    """Every rule in ``policies/rules/``, sorted by name."""
    rules = []
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        rule = getattr(module, "RULE", None)
        if not isinstance(rule, Rule):
            raise TypeError(f"policies/rules/{info.name}.py defines no RULE")
        if rule.name.replace("-", "_") != info.name:
            raise ValueError(
                f"policies/rules/{info.name}.py holds rule {rule.name}: one rule per module, named alike"
            )
        rules.append(rule)
    return sorted(rules, key=lambda r: r.name)
