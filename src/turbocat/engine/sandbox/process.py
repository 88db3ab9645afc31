"""The worker's side of a sandboxed run: spawn ``bootstrap.py``, bound it, collect, clean up.

No user code ever runs in the worker: a fresh interpreter (``-I -S -B``) is started in a new
session with a scrubbed environment (PATH, LANG, HOME and TMPDIR = its working directory;
none of the worker's TURBOCAT_*, database URLs or keys), a private working directory (0700,
owned by the step's uid, removed afterwards) and its own uid from a locked pool. Whatever
happens (result, crash, timeout, the awaiting task cancelled) the process group is killed, any
process left under the step's uid is killed, and the directory is removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import fcntl
import functools
import json
import os
import secrets
import shutil
import signal
import stat
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from turbocat.config import CodeRuntimeSettings

BOOTSTRAP = Path(__file__).with_name("bootstrap.py")
SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
MAX_REQUEST_BYTES = 64 * 1024 * 1024


class SandboxUnavailable(Exception):
    """This machine cannot isolate user code and the operator did not allow a degraded mode."""


class InputTooLarge(Exception):
    """The step's input (with the source) is larger than a sandbox accepts."""


@dataclass(frozen=True)
class Isolation:
    """What this machine offers (probed once per process)."""

    separate_uid: bool
    seccomp: bool
    landlock_abi: int

    def describe(self) -> str:
        parts = ["rlimits", "no_new_privs"]
        parts.append("separate uid" if self.separate_uid else "NO separate uid")
        parts.append("seccomp" if self.seccomp else "NO seccomp")
        parts.append(f"landlock v{self.landlock_abi}" if self.landlock_abi else "NO landlock")
        return ", ".join(parts)


@functools.cache
def probe() -> Isolation:
    """Can we switch uid (root), load libseccomp, use Landlock? Cheap, no process spawned."""
    seccomp = False
    for name in ("libseccomp.so.2", ctypes.util.find_library("seccomp")):
        with contextlib.suppress(OSError):
            seccomp = seccomp or hasattr(ctypes.CDLL(name), "seccomp_init")
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    abi = int(libc.syscall(444, None, 0, 1)) if sys.platform == "linux" else -1
    return Isolation(separate_uid=os.geteuid() == 0, seccomp=seccomp, landlock_abi=max(abi, 0))


@dataclass(frozen=True)
class Limits:
    cpu_seconds: int
    memory_mb: int
    wall_seconds: float


@dataclass
class Stream:
    """One captured output stream: the first ``limit`` bytes, and how many there were."""

    limit: int
    kept: bytearray = field(default_factory=bytearray)
    total: int = 0

    @property
    def truncated(self) -> bool:
        return self.total > len(self.kept)

    def text(self) -> str:
        return self.kept.decode("utf-8", "replace")


@dataclass
class Outcome:
    """What came back: the bootstrap's document (None when it wrote none), how it ended."""

    document: dict[str, Any] | None
    returncode: int | None
    timed_out: bool
    stdout: Stream
    stderr: Stream
    isolation: Isolation
    seconds: float


@contextlib.contextmanager
def _uid_slot(settings: CodeRuntimeSettings) -> Iterator[int]:
    """A uid no other code step on this machine holds, locked (flock) while the step runs."""
    folder = settings.state_dir or Path(tempfile.gettempdir()) / "turbocat-code-uids"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = os.lstat(folder)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        # someone else made it first (it is in a shared temp dir by default): do not trust it
        raise SandboxUnavailable(f"{folder} is not a directory of the worker's own user")
    os.chmod(folder, 0o700)
    for _ in range(64):
        uid = settings.uid_first + secrets.randbelow(settings.uid_count)
        fd = os.open(folder / str(uid), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        try:
            yield uid
        finally:
            os.close(fd)  # releases the lock
        return
    raise SandboxUnavailable("no free uid for a code step: raise runtimes.code.uid_count")


def _tasks_of(uid: int) -> int:
    """Processes and threads of ``uid`` now: what RLIMIT_NPROC counts."""
    count = 0
    for pid in _processes_of(uid):
        try:
            with open(f"/proc/{pid}/status", "rb") as status:
                lines = [line for line in status if line.startswith(b"Threads:")]
            count += int(lines[0].split()[1])
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
    return count


def _processes_of(uid: int) -> list[int]:
    """Live processes whose real uid is ``uid`` (zombies are dead already: init reaps them)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status", "rb") as status:
                fields = dict(line.split(b":", 1) for line in status if b":" in line)
            alive = fields[b"State"].split()[0] not in (b"Z", b"X")
            if alive and int(fields[b"Uid"].split()[0]) == uid:
                found.append(int(entry))
        except (OSError, ValueError, KeyError, IndexError):
            continue  # gone meanwhile
    return found


def _kill_uid(uid: int) -> None:
    """SIGKILL every process of the step's uid (a child that left the group, a fork bomb)."""
    for _ in range(200):
        pids = _processes_of(uid)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.001)


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


async def _uncancellable(work: Coroutine[Any, Any, None]) -> None:
    """Run clean-up to its end even if the awaiting task is cancelled meanwhile (the engine's
    step timeout and the sandbox's wall clock can fire together); re-raise the cancellation."""
    task = asyncio.ensure_future(work)
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
    task.result()


async def _reap(
    proc: asyncio.subprocess.Process,
    pidfd: int,
    uid: int | None,
    readers: Sequence[asyncio.Future[None]],
) -> None:
    """Kill the group and every process of the step's uid; collect the exit status."""
    _kill_group(proc.pid)
    if uid is not None:
        await asyncio.to_thread(_kill_uid, uid)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    await _exited(pidfd)
    os.close(pidfd)
    # output pipes close once every holder is dead; do not wait on a straggler for ever
    # (possible only in degraded mode, where there is no uid to sweep)
    _, pending = await asyncio.wait(readers, timeout=2)
    for reader in pending:
        reader.cancel()
    for _ in range(1000):  # the child watcher sets it right after the exit
        if proc.returncode is not None:
            break
        await asyncio.sleep(0.002)


async def _exited(pidfd: int) -> None:
    """Until the process exits. ``Process.wait()`` would also wait for its output pipes to
    close, which a child it left behind keeps open."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def exited() -> None:
        if not done.done():
            done.set_result(None)

    loop.add_reader(pidfd, exited)
    try:
        await done
    finally:
        loop.remove_reader(pidfd)


async def _drain(reader: asyncio.StreamReader | None, into: Stream) -> None:
    if reader is None:
        return
    while chunk := await reader.read(65536):
        into.total += len(chunk)
        room = into.limit - len(into.kept)
        if room > 0:
            into.kept += chunk[:room]


@contextlib.asynccontextmanager
async def _workdir(settings: CodeRuntimeSettings, owner: int | None) -> AsyncIterator[str]:
    root = settings.workdir_root or Path(tempfile.gettempdir())
    path = tempfile.mkdtemp(prefix="turbocat-code-", dir=root)  # 0700
    try:
        if owner is not None:
            os.chown(path, owner, owner)
        yield path
    finally:
        # root removes whatever the code left, whatever its modes; symlinks are not followed
        await _uncancellable(asyncio.to_thread(shutil.rmtree, path, True))


def _environment(workdir: str) -> dict[str, str]:
    """Nothing of the worker's environment: secrets, database URLs and keys live there."""
    return {"PATH": SAFE_PATH, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": workdir,
            "TMPDIR": workdir}  # fmt: skip


def check_isolation(settings: CodeRuntimeSettings, isolation: Isolation) -> None:
    if settings.allow_degraded:
        return
    missing = []
    if not isolation.separate_uid:
        missing.append("a separate uid (the worker does not run as root)")
    if not isolation.seccomp:
        missing.append("a seccomp filter (libseccomp is not installed)")
    if missing:
        raise SandboxUnavailable(
            "code steps are refused on this worker: no "
            + " and no ".join(missing)
            + ". Run the worker as root (it switches each step to its own uid), or set"
            " runtimes.code.allow_degraded = true to accept a weaker sandbox."
        )


async def run_python(
    source: str,
    input: Any,
    context: dict[str, Any],
    limits: Limits,
    settings: CodeRuntimeSettings,
) -> Outcome:
    """Run ``main`` of ``source`` in a sandboxed process; raises SandboxUnavailable when this
    machine cannot isolate it. Cancelling the awaiting task kills the process group."""
    isolation = probe()
    check_isolation(settings, isolation)
    with contextlib.ExitStack() as stack:
        uid = stack.enter_context(_uid_slot(settings)) if isolation.separate_uid else None
        result_file: IO[bytes] = stack.enter_context(tempfile.TemporaryFile())
        async with _workdir(settings, uid) as workdir:
            # without a uid of its own, the limit counts the worker's user's tasks too
            nproc = settings.max_processes
            if uid is None:
                nproc += await asyncio.to_thread(_tasks_of, os.geteuid())
            request = {
                "source": source, "input": input, "context": {**context, "workdir": workdir},
                "uid": uid, "gid": uid, "workdir": workdir, "result_fd": result_file.fileno(),
                "max_result_bytes": settings.max_result_bytes, "network": settings.allow_network,
                "seccomp": "try" if settings.allow_degraded else "require",
                "landlock": "try",
                "rlimits": {
                    "cpu": limits.cpu_seconds, "as": limits.memory_mb << 20,
                    "nproc": nproc, "nofile": settings.max_open_files,
                    "fsize": settings.max_file_size_mb << 20, "core": 0,
                },
            }  # fmt: skip
            payload = json.dumps(request).encode()
            if len(payload) > MAX_REQUEST_BYTES:
                raise InputTooLarge(f"the code's input is over {MAX_REQUEST_BYTES} bytes as JSON")
            outcome = await _spawn(payload, workdir, uid, limits, settings, result_file)
            outcome.isolation = isolation
            return outcome
    raise AssertionError("unreachable")  # pragma: no cover


async def _start(python: str, workdir: str, result_file: IO[bytes]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        python, "-I", "-S", "-B", str(BOOTSTRAP),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, cwd=workdir, env=_environment(workdir),
        start_new_session=True, pass_fds=(result_file.fileno(),),
    )  # fmt: skip


async def _spawn(
    payload: bytes,
    workdir: str,
    uid: int | None,
    limits: Limits,
    settings: CodeRuntimeSettings,
    result_file: IO[bytes],
) -> Outcome:
    stdout, stderr = Stream(settings.max_output_bytes), Stream(settings.max_output_bytes)
    started = time.monotonic()
    python = settings.python or sys.executable
    try:
        proc = await _start(python, workdir, result_file)
    except OSError as exc:
        raise SandboxUnavailable(f"cannot start the interpreter {python}: {exc}") from None
    # opened at once: the bootstrap waits for its request, so it cannot have exited yet
    pidfd = os.pidfd_open(proc.pid)
    readers = [
        asyncio.ensure_future(_drain(proc.stdout, stdout)),
        asyncio.ensure_future(_drain(proc.stderr, stderr)),
    ]
    timed_out = False

    async def feed_and_wait() -> None:
        assert proc.stdin is not None
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            proc.stdin.write(payload)
            await proc.stdin.drain()
            proc.stdin.close()
        await _exited(pidfd)

    try:
        try:
            await asyncio.wait_for(feed_and_wait(), limits.wall_seconds)
        except TimeoutError:
            timed_out = True
    finally:
        # always, also when this task is cancelled: nothing of the step may outlive it
        await _uncancellable(_reap(proc, pidfd, uid, readers))
    seconds = time.monotonic() - started
    result_file.seek(0)
    raw = result_file.read(settings.max_result_bytes + 4096)
    document: dict[str, Any] | None = None
    if raw:
        with contextlib.suppress(ValueError):
            loaded = json.loads(raw)
            document = loaded if isinstance(loaded, dict) else None
    return Outcome(document=document, returncode=proc.returncode, timed_out=timed_out,
                   stdout=stdout, stderr=stderr, isolation=probe(), seconds=seconds)  # fmt: skip
