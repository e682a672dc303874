"""The emulated servo bus answers from a thread of the test process, on a machine that may run
other jobs: give LeRobot's driver a longer reply window than a real bus needs, so that what these
tests check is the protocol, not the host's scheduling."""

import pytest


@pytest.fixture(autouse=True)
def patient_bus(monkeypatch):
    import scservo_sdk.port_handler

    # the SDK waits 2 x LATENCY_TIMER + 2 ms for a reply (34 ms); 200 ms here
    monkeypatch.setattr(scservo_sdk.port_handler, "LATENCY_TIMER", 99)
