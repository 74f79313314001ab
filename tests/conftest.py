"""Make `from tests.ecs_schema import ...` work from every test directory
(tests/unit is not a package) however pytest is started: the repository
root goes on sys.path."""

from __future__ import annotations

import os
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)
