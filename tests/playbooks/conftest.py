"""Fixtures of the deploy tests on pyinfra's ``@fake`` connector."""

from __future__ import annotations

from typing import Any

import pytest
from pyinfra.connectors.fake import FakeConnector


@pytest.fixture
def uploads(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """What the deploys upload (``files.put``) on the ``@fake`` connector: remote path -> text.

    The connector only records commands; this records the content of every file put, so a test
    can read the file a host would get.
    """
    seen: dict[str, str] = {}

    def put_file(
        self: FakeConnector, filename_or_io: Any, remote_filename: str, *args: Any, **kw: Any
    ) -> bool:
        filename_or_io.seek(0)
        data = filename_or_io.read()
        filename_or_io.seek(0)
        seen[remote_filename] = data.decode() if isinstance(data, bytes) else data
        return True

    monkeypatch.setattr(FakeConnector, "put_file", put_file)
    return seen
