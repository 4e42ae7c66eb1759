"""The llmkit CrossGuard policy pack: `pulumi preview --policy-pack policies`.

Only builds the pack: the rules are in policies/rules/ and llmkit.policy, shared with the
offline evaluation of `llmkit plan`.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the project: llmkit, policies

from llmkit.crossguard import build_pack

build_pack()
