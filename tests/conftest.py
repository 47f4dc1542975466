import os

import pytest
import torch


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Each test gets its own index cache, so no test sees another's cached tables."""
    monkeypatch.setenv("FASTAED_CACHE_DIR", str(tmp_path / "fastaed-cache"))


# Peer environments a run must have (FASTAED_REQUIRE_PEERS=whisper,nemo; .ci/run sets whisper): a test that
# would skip for want of one fails instead, so a peer venv that did not build can never turn the parity
# tests into silent skips.
REQUIRED_PEERS = {
    name.strip() for name in os.environ.get("FASTAED_REQUIRE_PEERS", "").split(",") if name.strip()
}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not report.skipped or not REQUIRED_PEERS:
        return
    reason = str(report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr)
    missing = [name for name in REQUIRED_PEERS if f".venv-{name}" in reason]
    if missing:
        report.outcome = "failed"
        report.longrepr = (
            f"FASTAED_REQUIRE_PEERS={','.join(sorted(REQUIRED_PEERS))} but this test skipped: {reason}"
        )
