"""Pulumi components, one concern per module.

Conventions (see docs/architecture.md): a component subclasses :class:`components.base.Component`
with a type token ``llmkit:<area>:<Name>``, takes typed args, parents every child to itself
with names ``f"{name}-<role>"``, exposes child handles as attributes and calls
``register_outputs`` last. Never create resources inside ``apply()``.
"""
