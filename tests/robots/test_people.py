"""The person in the loop: single keys from a terminal, and the simulated stand-in."""

import io
import os
import time

from conftest import wait_for

from tmrl_vla.robots.people import ESTOP, FAILURE, QUIT, SUCCESS, KeyboardPerson, SimulatedPerson


def keyboard():
    read_fd, write_fd = os.pipe()
    out = io.StringIO()
    person = KeyboardPerson(stream=os.fdopen(read_fd, "r"), out=out)
    return person, write_fd, out


def test_keys_become_events_and_enter_starts_the_episode():
    person, keys, out = keyboard()
    try:
        assert "[s] success" in out.getvalue()  # the keys are printed when it starts
        os.write(keys, b"sXfE")  # unknown keys are ignored; upper case counts
        assert wait_for(lambda: person.events.qsize() == 3)
        assert person.poll() == {SUCCESS, FAILURE, ESTOP}
        assert person.poll() == set()
        os.write(keys, b"s\n")  # a label pressed before the reset does not count for the next episode
        assert wait_for(lambda: person.events.qsize() == 2)
        started = time.monotonic()
        os.write(keys, b"\n")
        spent = person.reset_scene(episode=3)
        assert 0 <= spent <= time.monotonic() - started + 0.01
        assert "episode 3: reset the scene" in out.getvalue()
    finally:
        person.close()


def test_quit_during_the_reset_returns_and_is_seen_by_the_next_poll():
    person, keys, _ = keyboard()
    try:
        os.write(keys, b"q")
        person.reset_scene(episode=0)  # returns on q, without Enter
        assert person.poll() == {QUIT}
    finally:
        person.close()


class FakeSimulation:
    def __init__(self):
        self.seeds, self.picked = [], False

    def reset_scene(self, seed):
        self.seeds.append(seed)

    def success(self):
        return self.picked


def test_the_simulated_person_resets_with_distinct_seeds_and_reads_success():
    sim = FakeSimulation()
    person = SimulatedPerson(sim, seed=100)
    assert person.reset_scene(0) == 0.0 and person.reset_scene(1) == 0.0 and sim.seeds == [100, 101]
    assert person.poll() == set()
    sim.picked = True
    assert person.poll() == {SUCCESS}
