"""
The examples in C{examples/} run, each in a pytest process of its own (so
that pytest-twisted's reactor handling stays apart from Trial's in the main
run).
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from unittest import SkipTest

from twisted.trial.unittest import SynchronousTestCase

ROOT = Path(__file__).resolve().parent.parent

#: How many tests the pytest-twisted example holds.
PYTEST_TWISTED_TESTS = 10


class PytestTwistedExampleTests(SynchronousTestCase):
    """
    C{examples/test_fake_provider_pytest.py}: the fake provider under
    pytest-twisted.
    """

    def test_example_passes(self) -> None:
        """
        The example passes, every one of its tests, under pytest-twisted
        loaded explicitly (plugin autoloading off, so that nothing else
        installed changes the run).
        """
        if importlib.util.find_spec("pytest_twisted") is None:
            raise SkipTest(
                "pytest-twisted is not installed (pip install 'pylon_ai[test]'):"
                " the pytest-twisted example cannot run"
            )
        env = dict(os.environ, PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")
        env.pop("PYTEST_ADDOPTS", None)
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "pytest_twisted",
                "examples/test_fake_provider_pytest.py",
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        output = result.stdout + result.stderr
        self.assertEqual(result.returncode, 0, output)
        summary = result.stdout.strip().splitlines()[-1]
        self.assertRegex(
            summary,
            rf"^{PYTEST_TWISTED_TESTS} passed(, [0-9]+ warnings?)? in [0-9.]+s",
            output,
        )
        self.assertIsNone(re.search(r"\b(failed|error|skipped|xfail)", summary))
