"""The server's training and scoring processes end with it, whatever started the server and however it ended.

MONAI Label runs each training and scoring in a subprocess (``python -m monailabel.interfaces.utils.app``) that
nothing stops when the server ends: after a SIGTERM uvicorn re-raises the signal with its default action, so
the server exits at once (MONAI Label started as documented, ``monailabel start_server``) and a training ran on
for minutes, writing over the stats of the next server's run. Here every such subprocess asks Linux for SIGTERM
when the server process ends (``PR_SET_PDEATHSIG``; SIGKILL and crashes included) and stops at once if the
server is already gone. Elsewhere than Linux it does nothing; the training lock
(:mod:`lesion_app.lib.trainers.run_lock`) still keeps one training per model.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys

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
