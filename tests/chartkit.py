"""Keep one headless Chromium for the charts of a whole test session.

Each run of `send weekly` draws its charts in one batch, which starts a
browser (about 2-3 s). The tests make many runs: kaleido's own sync server
keeps one browser for all of them -- the same renderer, kept warm.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def warm_charts():
    import kaleido

    kaleido.start_sync_server(silence_warnings=True)
    yield
    kaleido.stop_sync_server(silence_warnings=True)
