"""Stopping a program cleanly: SIGTERM and SIGHUP end it as Ctrl-C does, and what it started ends with it.

- :func:`stoppable` wraps a program's ``main``: SIGTERM (``kill PID``, systemd, supervisord, container runtimes)
  and SIGHUP (a closed terminal) raise :class:`Stopped`, a :class:`KeyboardInterrupt`, in the main thread, so
  the ``finally`` blocks that stop its children run as they do for Ctrl-C.
- :func:`stop_process_tree` and :func:`stop_children` stop child processes: SIGTERM, wait, SIGKILL, wait.
- :func:`parent_death_signal` (a ``preexec_fn``) makes a child die with its parent even when the parent is
  SIGKILLed; ``LESION_STOP_WITH_PARENT=<pid>`` asks a :func:`stoppable` program to stop when its parent (that
  pid: ``make``, which forwards no SIGHUP to its recipe) dies. Linux only; elsewhere both do nothing.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import ParamSpec

import psutil

from lesion_app.server.lifetime import set_parent_death_signal

#: What stops a program besides Ctrl-C (SIGINT, which Python already turns into KeyboardInterrupt).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
#: Environment variable: the pid of the parent whose death stops a :func:`stoppable` program.
STOP_WITH_PARENT = "LESION_STOP_WITH_PARENT"

P = ParamSpec("P")


class Stopped(KeyboardInterrupt):
    """Raised in the main thread by SIGTERM or SIGHUP, as Ctrl-C raises KeyboardInterrupt."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextmanager
def stop_signals() -> Iterator[None]:
    """Inside, the first SIGTERM or SIGHUP raises :class:`Stopped` in the main thread; later ones are ignored so
    they cannot break off the clean-up (a second Ctrl-C still can). Restores the previous handlers on exit."""
    stopping = False

    def handler(signum: int, frame: object) -> None:
        nonlocal stopping
        if not stopping:
            stopping = True
            raise Stopped(signum)

    previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def parent_death_signal(signum: int = signal.SIGTERM) -> Callable[[], None]:
    """A ``preexec_fn`` for :class:`subprocess.Popen`: the child gets ``signum`` when this process ends, even by
    SIGKILL (Linux; on other systems it does nothing). Start the child from a thread that outlives it (the main
    thread): Linux signals when the thread that started it ends."""
    parent = os.getpid()

    def preexec() -> None:
        set_parent_death_signal(signum)
        if os.getppid() != parent:  # the parent ended before the request took effect
            os.kill(os.getpid(), signum)

    return preexec


def _stop_with_parent_from_environment() -> None:
    """Honours ``LESION_STOP_WITH_PARENT=<pid>`` (then removes it, so children do not inherit it): SIGTERM when
    that parent dies; raises :class:`Stopped` if it is already gone."""
    value = os.environ.pop(STOP_WITH_PARENT, "")
    if value and set_parent_death_signal(signal.SIGTERM) and os.getppid() != int(value):
        raise Stopped(signal.SIGTERM)


def stoppable(main: Callable[P, int]) -> Callable[P, int]:
    """``main`` run under :func:`stop_signals` (and ``LESION_STOP_WITH_PARENT``): Ctrl-C, SIGTERM and SIGHUP
    unwind it so its ``finally`` blocks stop what it started; then it prints ``stopped by SIGTERM`` (say) and
    returns 128 + the signal's number (130, 143, 129), the shell's convention. A ``main`` that counts being
    stopped as its normal end (a server) catches KeyboardInterrupt itself and returns 0."""

    @functools.wraps(main)
    def run(*args: P.args, **kwargs: P.kwargs) -> int:
        with stop_signals():
            try:
                _stop_with_parent_from_environment()
                return main(*args, **kwargs)
            except KeyboardInterrupt as e:
                signum = e.signum if isinstance(e, Stopped) else signal.SIGINT
                print(f"stopped by {signal.Signals(signum).name}", file=sys.stderr)
                return 128 + signum

    return run


def exit_now(code: int) -> None:
    """Ends this process with ``code`` at once, after flushing the logs and standard streams: a server's heap
    (torch, MONAI) took Python's final garbage collection 4-8 s, so a SIGTERMed ``lesion-serve`` stopped slowly.
    Only for the end of a program whose clean-up is done (children stopped, files written atomically)."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with suppress(Exception):
            stream.flush()
    os._exit(code)


def alive(process: psutil.Process) -> bool:
    """Whether the process still runs (a zombie, ended but not yet reaped, does not)."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def wait_gone(processes: Sequence[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Waits up to ``timeout`` seconds for the processes to end; returns those still running."""
    deadline = time.monotonic() + timeout
    while (left := [p for p in processes if alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def stop_processes(processes: Sequence[psutil.Process], timeout: float = 10.0) -> list[psutil.Process]:
    """SIGTERMs the processes, waits up to ``timeout`` seconds for all of them, SIGKILLs those left and waits
    for them; returns any that outlived SIGKILL (normally none)."""
    for p in processes:
        with suppress(psutil.Error):
            p.terminate()
    left = wait_gone(processes, timeout)
    for p in left:
        with suppress(psutil.Error):
            p.kill()
    return wait_gone(left, 5.0)


def descendants(pid: int) -> list[psutil.Process]:
    """Every process that ``pid`` started, and theirs; empty if it has ended."""
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def stop_process_tree(process: subprocess.Popen, timeout: float = 10.0) -> int:
    """Stops ``process`` and every process it started (its whole process group too, when it leads one, as
    ``start_new_session=True`` makes it): SIGTERM, up to ``timeout`` seconds, SIGKILL. Returns its exit status."""
    if process.poll() is None:
        tree = [psutil.Process(process.pid), *descendants(process.pid)]
        with suppress(ProcessLookupError, PermissionError):
            if os.getpgid(process.pid) == process.pid:
                os.killpg(process.pid, signal.SIGTERM)
        stop_processes(tree, timeout)
    return process.wait()


def stop_children(timeout: float = 10.0) -> None:
    """Stops every process this one started, and theirs (SIGTERM, up to ``timeout`` seconds, SIGKILL)."""
    stop_processes(descendants(os.getpid()), timeout)


def port_in_use(port: int) -> bool:
    """Whether a program listens on this TCP port on any local address (a server could not bind it)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return True
            raise
    return False
