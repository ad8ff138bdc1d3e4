"""Lets the tests here import migration_util (the helpers they share) by name, and makes a run
whose every test skipped exit 77, which ctest reports as skipped (SKIP_RETURN_CODE): a skip
next to a failure still fails, and a skip never passes as a success."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def pytest_sessionfinish(session, exitstatus):
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    stats = reporter.stats if reporter else {}
    others = ("passed", "failed", "error", "xfailed", "xpassed")
    if exitstatus == 0 and stats.get("skipped") and not any(stats.get(k) for k in others):
        session.exitstatus = 77
