"""The server's training and scoring processes end with it, whatever started the server and however it ended.

MONAI Label runs each training and scoring in a subprocess (``python -m monailabel.interfaces.utils.app``) that
nothing stops when the server ends: after a SIGTERM uvicorn re-raises the signal with its default action, so
the server exits at once (MONAI Label started as documented, ``monailabel start_server``) and a training ran on
for minutes, writing over the stats of the next server's run. Here every such subprocess asks Linux for SIGTERM
when the server process ends (``PR_SET_PDEATHSIG``; SIGKILL and crashes included) and stops at once if the
server is already gone. Elsewhere than Linux it does nothing; the training lock
(:mod:`lesion_app.lib.trainers.run_lock`) still keeps one training per model.

A stopping server starts nothing new (:func:`stop_on_signals`, :func:`stop_background_work`): the queued trainings
and scorings are cancelled before the running ones are stopped, and the retraining schedule submits nothing.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
from typing import Any

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None

#: MONAI Label's module that runs a training or scoring in its own process.
TASK_MODULE = "monailabel.interfaces.utils.app"
#: Environment variable set by the server: its pid, which its task subprocesses inherit.
SERVER_PID = "LESION_SERVER_PID"


def set_parent_death_signal(signum: int) -> bool:
    """Asks Linux to send ``signum`` to this process when its parent (thread) ends; False where unsupported.

    Raises:
        OSError: when the kernel refuses the request.
    """
    if _LIBC is None:
        return False
    if _LIBC.prctl(_PR_SET_PDEATHSIG, int(signum), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    return True


def in_task_subprocess() -> bool:
    """Whether this process is one of MONAI Label's training or scoring subprocesses."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    return getattr(spec, "name", None) == TASK_MODULE


def mark_server() -> None:
    """In the server process: its task subprocesses learn its pid (they inherit the environment)."""
    os.environ[SERVER_PID] = str(os.getpid())


def end_with_server() -> None:
    """In a task subprocess: SIGTERM when the server ends; if it has ended already, stop now."""
    if not in_task_subprocess() or not set_parent_death_signal(signal.SIGTERM):
        return
    server = os.environ.get(SERVER_PID, "")
    if server.isdigit() and os.getppid() != int(server):
        logger.warning(f"the server (pid {server}) has ended: this task stops")
        os.kill(os.getpid(), signal.SIGTERM)


_stopping = False


def stopping() -> bool:
    """Whether the server has been asked to stop: from then on it starts no training or scoring."""
    return _stopping


def stop_background_work() -> None:
    """Marks the server as stopping and cancels MONAI Label's queued trainings and scorings, so that stopping the
    running one does not start the next (a SIGTERM to a server with a Dice scoring queued started it, 13 s)."""
    global _stopping
    _stopping = True
    from monailabel.utils.async_tasks import utils as async_tasks

    for executor in list(async_tasks.background_executors.values()):
        executor.shutdown(wait=False, cancel_futures=True)
    for tasks in async_tasks.background_tasks.values():
        for task in tasks:
            if task.get("status") == "SUBMITTED":
                task["status"] = "STOPPED"


def stop_on_signals() -> None:
    """In the server process (the main thread, after uvicorn installed its handlers): SIGTERM, SIGINT and SIGHUP
    first cancel the queued background work (:func:`stop_background_work`), then do what they did."""
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        previous = signal.getsignal(signum)
        if getattr(previous, "lesion_app_stops", False):
            continue

        def handler(sig: int, frame: Any, previous: Any = previous) -> None:
            stop_background_work()
            if callable(previous):
                previous(sig, frame)
            elif previous == signal.SIG_DFL:
                signal.signal(sig, signal.SIG_DFL)
                os.kill(os.getpid(), sig)

        handler.lesion_app_stops = True  # type: ignore[attr-defined]
        try:
            signal.signal(signum, handler)
        except ValueError:  # not the main thread: the launcher's own stop (lesion-serve) cancels the queue
            return
