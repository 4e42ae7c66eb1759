"""The on-prem lab: systemd-nspawn hosts, their network and services, and what the lab mirror serves.

``llmkit lab up|status|down`` (``llmkit.commands.lab``) drives it; the end-to-end tests
(``pytest -m e2e``) run the playbooks against it.
"""
