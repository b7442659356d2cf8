"""What a refused call answered: the HTTP status and the message a user reads."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi import HTTPException


def refused(call: Callable[[], object]) -> tuple[int, str]:
    """Calls ``call``, which must raise :class:`HTTPException`; its (status, detail)."""
    with pytest.raises(HTTPException) as e:
        call()
    return e.value.status_code, str(e.value.detail)
