"""Helpers for tests that use real ROS 2 (rclpy, DDS on loopback) and real processes.

Importing this module never imports rclpy: non-ROS tests may use `wait_until` and the process
helpers anywhere. The fixtures that wrap these helpers live in test/conftest.py.

A test module that needs ROS calls `require_ros(...)` (or `require_modules(...)`) before its ROS
imports: it skips the module with the import error as reason. Not `pytest.importorskip`: from
pytest 9.1 on it only catches ModuleNotFoundError, so a C extension that fails to load (an
ImportError) errors instead of skipping, and its `exc_type` is missing before pytest 8.2.

Traps these helpers avoid (details: docs/development.md):
- Kilted's rcl ignores ROS_LOCALHOST_ONLY: isolation needs ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST,
  and a domain of its own per test run.
- The PyPI wheels re-exec Python with LD_LIBRARY_PATH set unless _ROS_WHEELS_BOOTSTRAP_COMPLETE
  is set: a subprocess environment must keep both variables or neither.
- A background job of a non-interactive shell ignores SIGINT: processes start in their own session
  and are stopped with SIGINT sent to that session's process group.
"""
from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

REPO_ROOT = Path(__file__).resolve().parent.parent
TEST_DIR = Path(__file__).resolve().parent
MAX_ROS_DOMAIN_ID = 101          # 0..101 are valid on Linux for every RMW
DOMAIN_ID_OVERRIDE_VAR = 'MTL_TEST_ROS_DOMAIN_ID'
BOOTSTRAP_GUARD_VAR = '_ROS_WHEELS_BOOTSTRAP_COMPLETE'
PACKAGE = 'mtl_perception_ros'
# `import rclpy.node` loads rclpy's C extension (fails on a broken LD_LIBRARY_PATH); the messages
# are what every ROS test publishes or subscribes.
ROS_MODULES = ('rclpy', 'rclpy.node', 'sensor_msgs.msg', 'std_msgs.msg')
# Submodules, not just `launch`: the repository's launch/ folder imports as a namespace package.
LAUNCH_MODULES = ('launch.actions', 'launch_ros.actions', 'launch_testing.actions', 'ament_index_python.packages')
# pytest arguments that keep launch_testing's plugins (entry points `launch_testing` and `launch_ros`)
# out of a child pytest run; naming a plugin that is not installed is harmless.
NO_LAUNCH_TESTING_PLUGINS = ('-p', 'no:launch_testing', '-p', 'no:launch_ros')


# ----------------------------------------------------------------------------- what this machine has
@functools.lru_cache(maxsize=None)
def missing_modules_reason(modules: tuple[str, ...]) -> str:
    """'' when every module in `modules` imports, else which one does not and why."""
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as error:   # ImportError; OSError from a shared library; whatever a broken install raises
            return f'needs {name} ({type(error).__name__}: {" ".join(str(error).split())})'   # one line
    return ''


def ros_unavailable_reason(*extra: str) -> str:
    """'' when rclpy (with its C extension), the standard messages and `extra` import, else why not."""
    return missing_modules_reason(ROS_MODULES + extra)


def require_modules(*modules: str) -> None:
    """Skip the calling test module (or test) unless all `modules` import."""
    __tracebackhide__ = True    # the skip is reported at the caller's line, as pytest.importorskip's
    reason = missing_modules_reason(modules)
    if reason:
        import pytest
        pytest.skip(reason, allow_module_level=True)


def require_ros(*extra: str) -> None:
    """Skip the calling test module unless rclpy, the standard messages and `extra` import."""
    __tracebackhide__ = True
    require_modules(*ROS_MODULES, *extra)


def launch_test_unavailable_reason(executable: str = 'mtl_perception_node') -> str:
    """'' when test_launch.py can run, else why not.

    It needs launch, launch_ros and launch_testing, rclpy with vision_msgs, and this package
    registered in an ament prefix with its executable in lib/<package> (`colcon build`, then
    `source install/setup.bash`): a pip install registers nothing, and launch_ros's Node looks
    executables up there.
    """
    return (missing_modules_reason(LAUNCH_MODULES + ROS_MODULES + ('vision_msgs.msg',))
            or package_unregistered_reason(executable))


def package_unregistered_reason(executable: str = 'mtl_perception_node') -> str:
    """'' when this package is in an ament prefix (AMENT_PREFIX_PATH) with lib/<package>/`executable`."""
    from ament_index_python.packages import get_package_prefix
    try:
        prefix = Path(get_package_prefix(PACKAGE))
    except (LookupError, OSError, ValueError) as error:  # PackageNotFoundError; AMENT_PREFIX_PATH unset
        return (f'{PACKAGE} is not registered in an ament prefix ({type(error).__name__}: {error}); '
                'colcon build it and source install/setup.bash')
    if not (prefix / 'lib' / PACKAGE / executable).exists():
        return f'{prefix} has no lib/{PACKAGE}/{executable} (colcon build installs it there, pip does not)'
    return ''


# ----------------------------------------------------------------------------- environment
def pick_ros_domain_id(environ: Mapping[str, str] = os.environ) -> int:
    """MTL_TEST_ROS_DOMAIN_ID when set (validated), else a random domain in 0..101."""
    value = environ.get(DOMAIN_ID_OVERRIDE_VAR, '').strip()
    if not value:
        return random.SystemRandom().randint(0, MAX_ROS_DOMAIN_ID)
    try:
        domain_id = int(value)
    except ValueError:
        domain_id = -1
    if not 0 <= domain_id <= MAX_ROS_DOMAIN_ID:
        raise ValueError(f'{DOMAIN_ID_OVERRIDE_VAR}={value!r}: expected an integer in 0..{MAX_ROS_DOMAIN_ID}')
    return domain_id


def isolate_ros_environment(environ=os.environ, domain_id: int | None = None) -> int:
    """Keep DDS traffic on this host and in one domain; returns the domain id set.

    Sets ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST (Jazzy and later), ROS_LOCALHOST_ONLY=1
    (Humble), ROS_DOMAIN_ID; removes ROS_STATIC_PEERS (which would add peers off this host).
    """
    if domain_id is None:
        domain_id = pick_ros_domain_id(environ)
    environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    environ['ROS_LOCALHOST_ONLY'] = '1'
    environ['ROS_DOMAIN_ID'] = str(domain_id)
    environ.pop('ROS_STATIC_PEERS', None)
    return domain_id


def subprocess_env(extra: Mapping[str, str] | None = None, base: Mapping[str, str] | None = None) -> dict:
    """Environment for a Python subprocess that may import rclpy.

    A copy of `base` (default os.environ, which carries the test run's ROS isolation) where
    LD_LIBRARY_PATH and _ROS_WHEELS_BOOTSTRAP_COMPLETE are both kept or both dropped (the guard
    without the library path makes `import rclpy` fail in the child), the repository root leads
    PYTHONPATH (the child imports this checkout's mtl_perception_ros), and output is unbuffered.
    """
    env = dict(os.environ if base is None else base)
    if extra:
        env.update(extra)
    if env.get(BOOTSTRAP_GUARD_VAR) and not env.get('LD_LIBRARY_PATH'):
        del env[BOOTSTRAP_GUARD_VAR]   # let the child's bootstrapper rebuild LD_LIBRARY_PATH
    paths = [str(REPO_ROOT)] + [p for p in env.get('PYTHONPATH', '').split(os.pathsep)
                                if p and p != str(REPO_ROOT)]
    env['PYTHONPATH'] = os.pathsep.join(paths)
    env['PYTHONUNBUFFERED'] = '1'
    return env


def import_script(path: str | os.PathLike, name: str | None = None):
    """Import a script file (e.g. test/helpers/publish_samples.py) as a module, by path."""
    path = Path(path)
    spec = importlib.util.spec_from_file_location(name or f'_script_{path.stem}', path)
    if spec is None or spec.loader is None:
        raise ImportError(f'cannot import {path}')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------------------- waiting
def wait_until(predicate: Callable[[], Any], timeout_s: float, what: str = 'condition',
               interval_s: float = 0.02, step: Callable[[float], None] | None = None):
    """Poll `predicate` until it returns a truthy value (returned) or fail after `timeout_s`.

    `step(max_wait_s)` replaces the sleep between polls (e.g. spinning an executor).
    Raises AssertionError naming `what` on timeout, so a test reads the reason.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f'timed out after {timeout_s:.1f} s waiting for {what}')
        wait = min(interval_s, remaining)
        if step is None:
            time.sleep(wait)
        else:
            step(wait)


# ----------------------------------------------------------------------------- rclpy in-process
class RosTestContext:
    """rclpy with a fresh Context of its own: node factory, executor, spin-until-condition.

    SIGINT handlers are left alone (pytest keeps Ctrl-C). Call `shutdown()` when done (the
    `rclpy_context` fixture does).
    """

    def __init__(self):
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.signals import SignalHandlerOptions

        self.context = Context()
        rclpy.init(context=self.context, signal_handler_options=SignalHandlerOptions.NO)
        self.executor = SingleThreadedExecutor(context=self.context)
        self._nodes = []

    def create_node(self, name: str, **kwargs):
        """A node in this context, already added to `executor` (kwargs go to rclpy.create_node)."""
        import rclpy

        node = rclpy.create_node(name, context=self.context, **kwargs)
        self.executor.add_node(node)
        self._nodes.append(node)
        return node

    __call__ = create_node

    def spin_once(self, timeout_s: float = 0.05) -> None:
        self.executor.spin_once(timeout_sec=timeout_s)

    def spin_until(self, predicate: Callable[[], Any], timeout_s: float, what: str = 'condition'):
        """Spin the executor until `predicate()` is truthy (returned); AssertionError on timeout."""
        return wait_until(predicate, timeout_s, what, interval_s=0.05, step=self.spin_once)

    def shutdown(self) -> None:
        import rclpy

        for node in self._nodes:
            self.executor.remove_node(node)
            node.destroy_node()
        self._nodes.clear()
        self.executor.shutdown(timeout_sec=1.0)
        rclpy.try_shutdown(context=self.context)


# ----------------------------------------------------------------------------- processes
class RosProcess:
    """A subprocess in its own session, its stdout + stderr in a log file."""

    def __init__(self, args: Sequence[str], log_path: str | os.PathLike, env: Mapping[str, str] | None = None,
                 cwd: str | os.PathLike | None = None):
        self.args = [str(a) for a in args]
        self.log_path = Path(log_path)
        self._log = open(self.log_path, 'wb')
        self.popen = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=self._log,
                                      stderr=subprocess.STDOUT, env=dict(env) if env is not None else None,
                                      cwd=str(cwd or REPO_ROOT), start_new_session=True)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def poll(self):
        return self.popen.poll()

    def output(self) -> str:
        """Everything the process wrote so far (stdout and stderr interleaved)."""
        return self.log_path.read_text(errors='replace')

    def assert_running(self) -> None:
        code = self.popen.poll()
        if code is not None:
            raise AssertionError(f'{self.args} exited early with code {code}; its output:\n{self.output()}')

    def signal_group(self, sig: int) -> None:
        """Send `sig` to the process group (start_new_session: the group id is the pid)."""
        try:
            os.killpg(self.popen.pid, sig)
        except ProcessLookupError:
            pass

    def interrupt(self, timeout_s: float = 20.0, sig: int = signal.SIGINT) -> int:
        """SIGINT (Ctrl-C; or `sig`, e.g. SIGTERM) to the process group, then wait; returns the exit code.

        Raises AssertionError (after killing the group) when it does not exit within timeout_s.
        """
        if self.popen.poll() is None:
            self.signal_group(sig)
        try:
            code = self.popen.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f'{self.args} ignored {signal.Signals(sig).name} for {timeout_s} s; '
                                 f'its output:\n{self.output()}')
        self._log.close()
        return code

    def kill(self) -> None:
        """SIGKILL the process group and reap it (clean-up after failures)."""
        if self.popen.poll() is None:
            self.signal_group(signal.SIGKILL)
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self._log.close()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Best-effort clean stop: SIGINT, then SIGKILL if it does not leave in time."""
        if self.popen.poll() is None:
            self.signal_group(signal.SIGINT)
            try:
                self.popen.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                pass
        self.kill()


def python_command(script: str | os.PathLike, *args: str) -> list[str]:
    """argv running `script` with this interpreter (the venv's, so the child gets its rclpy)."""
    return [sys.executable, str(script), *map(str, args)]


def run_child_pytest(args: Sequence[str], env: Mapping[str, str], timeout_s: float = 120.0):
    """Run `python -m pytest -q -rs ARGS` in the repository root; returns the CompletedProcess.

    launch_testing's plugins stay out (NO_LAUNCH_TESTING_PLUGINS), and so does PYTEST_ADDOPTS:
    `colcon test` puts its own arguments there, --junit-xml with the path of its result file among them.
    """
    env = {k: v for k, v in env.items() if k != 'PYTEST_ADDOPTS'}
    return subprocess.run([sys.executable, '-m', 'pytest', '-q', '-rs', '-p', 'no:cacheprovider',
                           *NO_LAUNCH_TESTING_PLUGINS, *map(str, args)],
                          env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout_s)


def console_script(name: str, module: str) -> list[str]:
    """argv of a console script: the venv's (pip install -e .), one on PATH, a colcon install's
    lib/<package>/NAME (off PATH), else `python -m module`."""
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if not found:
        try:
            from ament_index_python.packages import get_package_prefix
            candidate = Path(get_package_prefix('mtl_perception_ros')) / 'lib' / 'mtl_perception_ros' / name
            found = str(candidate) if candidate.exists() else None
        except Exception:   # PackageNotFoundError, or no ament index at all
            found = None
    return [found] if found else [sys.executable, '-m', module]


NODE_OUTPUT_TOPICS = ('/mtl_perception/detections', '/mtl_perception/camera/semantic/labels')


def perception_values(array) -> dict:
    """Key/values of the perception node's DiagnosticStatus in a diagnostic_msgs/DiagnosticArray ({}
    when the array holds none)."""
    for entry in array.status:
        if entry.name.endswith(': mtl_perception'):
            return {kv.key: kv.value for kv in entry.values}
    return {}


def start_node_and_recorder(context: 'RosTestContext', start_process, params_path, recorded,
                            subscribers: int = 1, ready_timeout_s: float = 60.0,
                            output_topics=NODE_OUTPUT_TOPICS, env=None, answers: int | None = None):
    """The node on a params file and mtl_bag_record on its outputs (`output_topics`) and /diagnostics
    into `recorded`: (node, recorder) RosProcesses once the node said 'ready' and each output topic
    has `subscribers` subscribers (the recorder's, plus any the caller made first). `start_process`
    is the conftest's ros_process fixture, `env` the environment of both processes (None: its default).
    `answers`: the recorder stops by itself once every output topic has that many messages, and 2.5 s
    later (one more /diagnostics): see `wait_for_recorder`."""
    node = start_process(console_script('mtl_perception_node', 'mtl_perception_ros.ros.node') + [
        '--ros-args', '--params-file', str(params_path)], name='node', env=env)
    assert context.spin_until(lambda: (node.assert_running() or True) and 'ready' in node.output(),
                              ready_timeout_s, 'the node to be ready'), node.output()
    recorder = start_process(console_script('mtl_bag_record', 'mtl_perception_ros.ros.bag_record') + [
        '--topics', *output_topics, '/diagnostics', '--out', str(recorded),
        *(['--until', *(f'{topic}={answers}' for topic in output_topics), '--linger', '2.5'] if answers else [])],
        name='recorder', env=env)
    # matched as the node's publishers see it (its /diagnostics `subscribers.<topic>`): the node computes
    # an output only for matched subscribers, and a graph query from a third participant can see the
    # recorder's subscription seconds before the node's publisher has matched it
    from diagnostic_msgs.msg import DiagnosticArray
    matched = {}

    def on_diagnostics(message):
        matched.update({key[len('subscribers.'):]: int(value) for key, value in perception_values(message).items()
                        if key.startswith('subscribers.')})
    probe = context.create_node('recorder_probe')
    probe.create_subscription(DiagnosticArray, '/diagnostics', on_diagnostics, 10)
    try:
        context.spin_until(lambda: (recorder.assert_running() or True)
                           and all(matched.get(topic, 0) >= subscribers for topic in output_topics),
                           30, 'the node to match the recorder on every output')
    except AssertionError as error:
        raise AssertionError(f'{error}: matched {matched}\nrecorder:\n{recorder.output()[-2000:]}') from None
    return node, recorder


def wait_for_recorder(recorder, node, timeout_s: float = 60.0) -> None:
    """A recorder started with `answers` has stopped by itself (every answer recorded), within timeout_s."""
    try:
        code = recorder.popen.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        recorder.interrupt()
        raise AssertionError(f'the recorder did not get every answer in {timeout_s:.0f} s:\n{recorder.output()}'
                             f'\nnode:\n{node.output()[-4000:]}') from None
    assert code == 0, recorder.output()
