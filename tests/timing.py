"""The suite's one timing knob: every wait in the tests scales with it.

On a slow or busy machine, ``CABLECAR_TESTS_TIMEOUT_FACTOR=2 make test`` doubles them.
"""

from __future__ import annotations

import os

#: How much longer than usual any wait may take.
FACTOR = float(os.environ.get("CABLECAR_TESTS_TIMEOUT_FACTOR", "1"))

#: Seconds a single expected event (a frame, a reply, a state change) may take.
TIMEOUT = 5.0 * FACTOR
