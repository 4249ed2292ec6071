"""A call run on its own thread, for the guest helper (stdlib only, Python 3.9+)."""

from __future__ import annotations

import threading

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs 40 ms of the helper's start under TCG; only for annotations
    from typing import Any, Callable


class Later:
    """A call run on its own thread (concurrent.futures would cost 60 ms of start-up under
    TCG); result() waits, then returns or raises what the call did. Heavy calls (a build,
    an objdump of vmlinux) take one of HEAVY's slots: the guest has 2 vCPUs."""

    HEAVY = threading.BoundedSemaphore(3)

    def __init__(self, func: Callable[..., Any], *args: Any, heavy: bool = False) -> None:
        self._value: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(func, args, heavy),
                                        daemon=True)
        self._thread.start()

    def _run(self, func: Callable[..., Any], args: tuple[Any, ...], heavy: bool) -> None:
        try:
            if heavy:
                with self.HEAVY:
                    self._value = func(*args)
            else:
                self._value = func(*args)
        except BaseException as exc:  # handed to the caller by result()
            self._error = exc

    def result(self) -> Any:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value
