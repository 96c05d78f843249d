"""The machine's start lock: one heavy start (a Ray node, a vLLM engine) at a time, released when its
holder ends however it ends, and never a reason not to start."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from shelfproof.runtime import machine

HOLDER = """
import sys, time
from shelfproof.runtime.machine import one_heavy_start
with one_heavy_start("the holder"):
    print("held", flush=True)
    time.sleep(float(sys.argv[1]))
"""


def _hold(tmp_path, seconds: float) -> subprocess.Popen:
    env = {**os.environ, machine.START_LOCK_ENV: str(tmp_path / "start.lock")}
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(seconds)], env=env, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_second_start_waits_for_the_first_and_goes_when_it_ends(tmp_path, monkeypatch):
    monkeypatch.setenv(machine.START_LOCK_ENV, str(tmp_path / "start.lock"))
    holder = _hold(tmp_path, 1.0)
    started = time.monotonic()
    with machine.one_heavy_start("the second"):
        waited = time.monotonic() - started
    assert waited >= 0.5  # it ran only once the holder let go
    holder.wait(10)


def test_a_killed_holder_releases_the_lock(tmp_path, monkeypatch):
    monkeypatch.setenv(machine.START_LOCK_ENV, str(tmp_path / "start.lock"))
    holder = _hold(tmp_path, 600)
    holder.send_signal(signal.SIGKILL)
    holder.wait(10)
    started = time.monotonic()
    with machine.one_heavy_start("after a kill", wait_s=30):
        assert time.monotonic() - started < 5


def test_past_its_wait_a_start_goes_ahead_without_the_lock(tmp_path, monkeypatch):
    monkeypatch.setenv(machine.START_LOCK_ENV, str(tmp_path / "start.lock"))
    holder = _hold(tmp_path, 600)
    try:
        started = time.monotonic()
        with machine.one_heavy_start("impatient", wait_s=0.5):
            assert 0.4 <= time.monotonic() - started < 5
    finally:
        holder.kill()
        holder.wait(10)


def test_a_start_releases_the_lock_for_the_next_even_when_it_fails(tmp_path, monkeypatch):
    monkeypatch.setenv(machine.START_LOCK_ENV, str(tmp_path / "start.lock"))
    try:
        with machine.one_heavy_start("failing"):
            raise RuntimeError("the start failed")
    except RuntimeError:
        pass
    started = time.monotonic()
    with machine.one_heavy_start("next", wait_s=30):
        assert time.monotonic() - started < 5


FORKING_HOLDER = """
import os, sys, time
from shelfproof.runtime.machine import one_heavy_start
with one_heavy_start("a forking start"):
    if os.fork() == 0:  # as vLLM's engine core is: it shares the lock's open file
        time.sleep(600)
        os._exit(0)
print("started", flush=True)
time.sleep(600)
"""


def test_a_process_forked_during_a_start_does_not_keep_the_lock(tmp_path, monkeypatch):
    monkeypatch.setenv(machine.START_LOCK_ENV, str(tmp_path / "start.lock"))
    env = {**os.environ, machine.START_LOCK_ENV: str(tmp_path / "start.lock")}
    holder = subprocess.Popen([sys.executable, "-c", FORKING_HOLDER], env=env, stdout=subprocess.PIPE, text=True,
                              start_new_session=True)
    try:
        assert holder.stdout.readline().strip() == "started"
        started = time.monotonic()
        with machine.one_heavy_start("after the forking start", wait_s=30):
            assert time.monotonic() - started < 5
    finally:
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait(10)


QUIET_HOLDER = """
import sys, time
from shelfproof.runtime.machine import one_heavy_start, quiet_please
with one_heavy_start("a Ray node"), quiet_please("its agents"):
    print("held", flush=True)
    time.sleep(float(sys.argv[1]))
"""


def test_a_start_that_asks_for_quiet_holds_back_cooperating_processes_until_it_is_done(tmp_path, monkeypatch):
    monkeypatch.setenv(machine.START_LOCK_ENV, str(tmp_path / "start.lock"))
    assert machine.wait_for_quiet() < 0.5  # nothing starting: no wait
    env = {**os.environ, machine.START_LOCK_ENV: str(tmp_path / "start.lock")}
    holder = subprocess.Popen([sys.executable, "-c", QUIET_HOLDER, "1.0"], env=env, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    assert machine.wait_for_quiet() >= 0.5
    holder.wait(10)
    # a start without quiet (an engine's) holds no one back
    holder = _hold(tmp_path, 600)
    try:
        assert machine.wait_for_quiet() < 0.5
    finally:
        holder.kill()
        holder.wait(10)


def test_waiting_for_quiet_is_bounded(tmp_path, monkeypatch):
    monkeypatch.setenv(machine.START_LOCK_ENV, str(tmp_path / "start.lock"))
    env = {**os.environ, machine.START_LOCK_ENV: str(tmp_path / "start.lock")}
    holder = subprocess.Popen([sys.executable, "-c", QUIET_HOLDER, "600"], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert 0.4 <= machine.wait_for_quiet(wait_s=0.5) < 5
    finally:
        holder.kill()
        holder.wait(10)
