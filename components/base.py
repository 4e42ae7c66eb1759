"""The base every llmkit component builds on."""

from __future__ import annotations

from typing import Any, ClassVar

import pulumi


class Component(pulumi.ComponentResource):
    """A ComponentResource with llmkit's conventions built in.

    Subclasses set ``TYPE`` (``llmkit:<area>:<Name>``, no stutter) and create children
    with :meth:`child_opts`, so every child is parented to the component and inherits its
    providers.
    """

    TYPE: ClassVar[str]

    def __init__(self, name: str, opts: pulumi.ResourceOptions | None = None) -> None:
        if not getattr(self, "TYPE", "").startswith("llmkit:"):
            raise TypeError(f"{type(self).__name__}.TYPE must be a 'llmkit:<area>:<Name>' token")
        super().__init__(self.TYPE, name, None, opts)
        self.name = name

    def child_opts(self, **kwargs: Any) -> pulumi.ResourceOptions:
        """ResourceOptions for a child: parent=self plus whatever else is given."""
        return pulumi.ResourceOptions(parent=self, **kwargs)

    def child_name(self, role: str) -> str:
        return f"{self.name}-{role}"

    def account_id(self, given: pulumi.Input[str] | None) -> pulumi.Input[str]:
        """``given``, else the account of the caller (``aws.get_caller_identity``, parented here)."""
        if given is not None:
            return given
        import pulumi_aws as aws

        return aws.get_caller_identity_output(opts=pulumi.InvokeOutputOptions(parent=self)).account_id
