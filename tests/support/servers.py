"""What the test servers share."""

from __future__ import annotations

#: The environment of a test server that does not test the scoring: MONAI Label's uncertainty scoring at start-up
#: and after a training is off (a scoring subprocess over every photograph would only compete for the CPU).
#: test_active_learning and the scoring tests of test_replayed_reports keep it, or start it themselves.
NO_SCORING = {"MONAI_LABEL_AUTO_UPDATE_SCORING": "false"}
