"""Ctrl-C and SIGTERM for the console scripts: a flag that the main loop polls, never an exception.

rclpy's default signal handling shuts the context down from the signal handler and then raises
KeyboardInterrupt in the main thread wherever it happens to be. When that is inside a pybind11
call (taking a message, publishing), pybind11 reports it as
`RuntimeError: Unable to convert call argument ...` and the process dies with a traceback,
while worker threads publish into the dead context. Here SIGINT and SIGTERM (what `ros2 launch`
sends) only set a flag; the main loop sees it within one spin timeout, stops its own threads,
and shuts rclpy down in order, so the exit is clean (code 0) and no output is lost.
"""
from __future__ import annotations

import re
import signal
import threading
from collections.abc import Callable
from contextlib import contextmanager

import rclpy
from rclpy.executors import ExternalShutdownException

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """Set by SIGINT / SIGTERM; `requested` tells the main loop to leave."""

    def __init__(self):
        self._event = threading.Event()

    def install(self) -> 'StopRequest':
        """Handle STOP_SIGNALS in this process (call from the main thread)."""
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._handle)
        return self

    def _handle(self, _signum, _frame) -> None:
        self._event.set()

    @property
    def requested(self) -> bool:
        return self._event.is_set()


def init_ros(args=None) -> StopRequest:
    """rclpy.init without rclpy's signal handlers, and a StopRequest for SIGINT / SIGTERM. ROS
    arguments rcl cannot take (a params file it cannot parse, e.g. a list mixing 1 and 1.5; an
    unknown --ros-args flag) end the process with rcl's message on one line and exit code 1."""
    from rclpy.impl.implementation_singleton import rclpy_implementation
    from rclpy.signals import SignalHandlerOptions

    try:
        rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    except rclpy_implementation.RCLError as error:
        raise SystemExit(f'cannot start: {rcl_message(error)}') from None
    return StopRequest().install()


def rcl_message(error: Exception) -> str:
    """rcl's error text without the C source locations it appends (', at /path/file.c:123')."""
    return re.sub(r', at [^,]*\.c(pp)?:\d+', '', str(error)).strip()


def spin_until_stopped(node, stop: StopRequest, timeout_s: float = 0.1) -> None:
    """Serve `node`'s callbacks until a stop is requested or the context shuts down."""
    from rclpy.executors import SingleThreadedExecutor

    executor = SingleThreadedExecutor(context=node.context)
    executor.add_node(node)
    try:
        while not stop.requested and rclpy.ok(context=node.context):
            executor.spin_once(timeout_sec=timeout_s)
    finally:
        executor.remove_node(node)
        executor.shutdown(timeout_sec=1.0)


class MainOutcome:
    """The exit code of a console script's main frame (see `main_frame`)."""

    def __init__(self):
        self.code = 0


@contextmanager
def main_frame(logger_name: str, fatal_errors: tuple = (), cleanup: Callable[[], None] | None = None):
    """The outer frame of each console script's main().

    Ctrl-C and an external shutdown end the block normally (exit code 0); an error of
    `fatal_errors` (a user's mistake: a bad file, a bad parameter) is logged as fatal without a
    traceback and gives exit code 1; `cleanup` runs in every case, then rclpy is shut down once.
    """
    outcome = MainOutcome()
    try:
        yield outcome
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except fatal_errors as error:
        rclpy.logging.get_logger(logger_name).fatal(str(error))
        outcome.code = 1
    finally:
        if cleanup is not None:
            cleanup()
        if rclpy.ok():
            rclpy.shutdown()
