"""A pytest plugin that writes each test's outcome to a file as the test ends, for runs that may be stopped.

    pytest -p outcomes --outcomes PATH ...

A line of JSON per event, appended and flushed at once: {"test", "outcome": "running"} as a test starts, then
{"test", "outcome", "seconds", "message"} as it ends (passed, failed or skipped; a failure in setup or teardown
counts as failed). A run killed at a time limit writes no junit XML, but leaves every outcome it reached here,
and its last "running" line names the test it was stopped in (`gpu_check` reads it so).
"""

import json

MESSAGE_CHARS = 300


def pytest_addoption(parser):
    parser.addoption("--outcomes", metavar="PATH", help="append each test's outcome to PATH as it ends (JSON lines)")


class Outcomes:
    def __init__(self, path: str):
        self.file = open(path, "a", encoding="utf-8")
        self.ended: set[str] = set()  # an outcome is written once, at the first phase that decides it
        self.seconds: dict[str, float] = {}

    def _write(self, line: dict) -> None:
        self.file.write(json.dumps(line) + "\n")
        self.file.flush()

    def pytest_runtest_logstart(self, nodeid):
        self.seconds[nodeid] = 0.0
        self._write({"test": nodeid, "outcome": "running"})

    def pytest_runtest_logreport(self, report):
        self.seconds[report.nodeid] = self.seconds.get(report.nodeid, 0.0) + report.duration
        if report.nodeid in self.ended:
            return
        if report.failed:
            crash = getattr(report.longrepr, "reprcrash", None)  # the exception's own line, not the traceback's first
            self._end(report, "failed", crash.message if crash else report.longreprtext)
        elif report.skipped:
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else ""
            self._end(report, "skipped", reason.removeprefix("Skipped: "))
        elif report.when == "teardown":
            self._end(report, "passed", "")

    def _end(self, report, outcome: str, message: str) -> None:
        self.ended.add(report.nodeid)
        first = message.strip().splitlines()[:1]
        self._write(
            {
                "test": report.nodeid,
                "outcome": outcome,
                "seconds": round(self.seconds[report.nodeid], 2),
                "message": first[0][:MESSAGE_CHARS] if first else None,
            }
        )

    def pytest_unconfigure(self):
        self.file.close()


def pytest_configure(config):
    path = config.getoption("--outcomes")
    if path:
        config.pluginmanager.register(Outcomes(path), "outcomes-file")
