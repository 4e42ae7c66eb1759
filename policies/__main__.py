"""The llmkit CrossGuard policy pack: `pulumi preview --policy-pack policies`.

Only builds the pack: the rules are in policies/rules/, the engine in llmkit.policy, both shared
with the offline evaluation of `llmkit plan`.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the project: llmkit, policies

from llmkit.crossguard import build_pack
from policies.rules import load_rules

build_pack(load_rules())
