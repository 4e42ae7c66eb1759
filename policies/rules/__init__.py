"""One module per rule, named after it: ``aws-kms-key-enable-rotation`` is ``aws_kms_key_enable_rotation.py``.

Each module defines ``RULE``, an :class:`llmkit.policy.Rule`; :func:`llmkit.policy.load_rules`
finds them all.
"""
