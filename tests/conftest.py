"""Under CI (environment variable CI set, as `.ci/run` does) a skipped test fails: `make test` installs every
optional extra and `.ci/run` installs chromium, so a skip there is a missing dependency, not an option."""

import os

import pytest

STRICT = bool(os.environ.get("CI"))


def _fail_skip(report, what: str) -> None:
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
    report.outcome = "failed"
    report.longrepr = f"{what} was skipped under CI, where every optional dependency is installed: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):  # module-level importorskip
    report = (yield).get_result()
    if STRICT and report.skipped:
        _fail_skip(report, collector.nodeid)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):  # importorskip / pytest.skip inside a test or fixture
    report = (yield).get_result()
    if STRICT and report.skipped and not hasattr(report, "wasxfail"):
        _fail_skip(report, item.nodeid)
