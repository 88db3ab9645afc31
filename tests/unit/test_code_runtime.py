"""The code kind: user Python in a sandboxed process, each limit proven by code that breaks it.

These run real processes (the sandbox is the thing under test). As root (here and on CI) every
layer is on: own uid, no_new_privs, Landlock, seccomp, rlimits.
"""

from __future__ import annotations

import os
import secrets
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from turbocat.config import CodeRuntimeSettings, RuntimeSettings
from turbocat.domain.enums import LogLevel
from turbocat.engine.agents import code
from turbocat.engine.agents.base import AgentError, Invocation, Limits, RecordingServices
from turbocat.engine.sandbox import process

AS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not AS_ROOT, reason="the full sandbox needs root (CI runs as root)")
SECRET = "tc-secret-" + uuid.uuid4().hex


def invocation(
    source: str,
    inputs: dict[str, Any] | None = None,
    *,
    cpu: float = 2,
    memory_mb: int = 128,
    timeout: float | None = None,
    **settings: Any,
) -> tuple[Invocation, RecordingServices]:
    services = RecordingServices()
    execution_id = uuid.uuid4()
    call = Invocation(
        kind="code", config={"language": "python", "source": source}, inputs=inputs or {},
        context={}, services=services, idempotency_key=f"{execution_id}:calc:0",
        execution_id=execution_id, organization_id=uuid.uuid4(), step_key="calc",
        limits=Limits(max_execution_seconds=cpu, max_memory_mb=memory_mb),
        timeout_seconds=timeout,
        settings=RuntimeSettings(code=CodeRuntimeSettings(**{
            "wall_clock_margin_seconds": 1, "allow_degraded": not AS_ROOT, **UIDS, **settings})),
    )  # fmt: skip
    return call, services


async def run(source: str, inputs: dict[str, Any] | None = None, **kw: Any) -> Any:
    call, _ = invocation(source, inputs, **kw)
    return await code.invoke(call)


async def fails(source: str, kind: str, **kw: Any) -> AgentError:
    call, _ = invocation(source, **kw)
    with pytest.raises(AgentError) as caught:
        await code.invoke(call)
    assert caught.value.kind == kind, (caught.value.kind, caught.value.message)
    return caught.value


def private_uids() -> dict[str, int]:
    """A uid range of its own for each test, so that tests running in parallel (xdist) do not
    see each other's sandboxes in ``no_leftovers``."""
    return {"uid_first": 1_600_000 + secrets.randbelow(1_000_000) * 64, "uid_count": 64}


UIDS = private_uids()


def no_leftovers(uid_first: int | None = None, uid_count: int = 64) -> None:
    """No live sandbox process outlives a step (zombies are dead: init reaps them)."""
    first = UIDS["uid_first"] if uid_first is None else uid_first
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                status = Path(f"/proc/{entry}/status").read_text()
            except OSError:
                continue
            fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
            uid = int(fields["Uid"].split()[0])
            if first <= uid < first + uid_count:
                assert fields["State"].split()[0] in ("Z", "X"), status


@pytest.fixture(autouse=True)
def _secret_in_parent_env(monkeypatch: pytest.MonkeyPatch) -> None:
    UIDS.update(private_uids())
    monkeypatch.setenv("TURBOCAT_DATABASE_URL", f"postgresql://app:{SECRET}@db/turbocat")
    monkeypatch.setenv("TURBOCAT_TEST_SECRET", SECRET)


async def test_main_gets_input_and_context_and_returns_json() -> None:
    call, services = invocation(
        "def main(input, context):\n"
        "    print('hello from', context['step_key'])\n"
        "    return {'sum': sum(input['numbers']), 'key': context['idempotency_key'],\n"
        "            'attempt': context['attempt']}\n",
        {"numbers": [1, 2, 3]},
    )
    assert await code.invoke(call) == {"sum": 6, "key": call.idempotency_key, "attempt": 1}
    assert (LogLevel.INFO, "hello from calc\n") in [(lvl, msg) for lvl, msg, _ in services.logs]


async def test_one_argument_main_async_main_and_scalars() -> None:
    assert await run("def main(input):\n    return input['x'] * 2\n", {"x": 21}) == 42
    source = "import asyncio\nasync def main(input):\n    await asyncio.sleep(0)\n    return [1]\n"
    assert await run(source) == [1]
    assert await run("def main(input):\n    return None\n") is None


async def test_user_exception_reports_the_users_traceback_only() -> None:
    err = await fails("def helper():\n    raise ValueError('bad input')\n\n"
                      "def main(input):\n    helper()\n", "code_error")  # fmt: skip
    assert err.message == "ValueError: bad input"
    assert not err.retryable
    tb = err.details["traceback"]
    assert 'File "<code>", line 2, in helper' in tb and "raise ValueError('bad input')" in tb
    assert "bootstrap" not in tb


async def test_non_json_results_and_missing_main() -> None:
    err = await fails("def main(input):\n    return {1, 2}\n", "code_result_not_json")
    assert "set" in err.message
    await fails("def main(input):\n    return float('nan')\n", "code_result_not_json")
    await fails("x = 1\n", "code_missing_main")
    err = await fails("def main(input):\n    return 'x' * 5000\n", "code_result_too_large",
                      max_result_bytes=1024)  # fmt: skip


async def test_output_is_captured_and_bounded() -> None:
    call, services = invocation(
        "import sys\ndef main(input):\n    print('x' * 100000)\n"
        "    sys.stderr.write('warned\\n')\n    return 1\n",
        max_output_bytes=1024,
    )
    assert await code.invoke(call) == 1
    out = next(x for x in services.logs if x[2].get("stream") == "stdout")
    assert out[2]["truncated"] and out[2]["bytes"] == 100001
    assert out[1].startswith("x" * 1024) and "[stdout truncated: 100001 bytes" in out[1]
    assert len(out[1]) < 1200
    err = next(x for x in services.logs if x[2].get("stream") == "stderr")
    assert err[0] == LogLevel.WARN and err[1] == "warned\n"


@needs_root
async def test_parent_environment_and_secrets_are_unreachable() -> None:
    source = (
        "import os\n"
        "def main(input):\n"
        "    seen = dict(os.environ)\n"
        "    for path in ['/proc/%d/environ' % os.getppid(), '/proc/1/environ']:\n"
        "        try:\n"
        "            seen[path] = open(path, 'rb').read().decode('latin-1')\n"
        "        except OSError as exc:\n"
        "            seen[path] = 'denied: ' + exc.strerror\n"
        "    return {'env': seen, 'uid': os.getuid()}\n"
    )
    out = await run(source)
    assert SECRET not in str(out)
    assert sorted(out["env"]) == ["/proc/1/environ", f"/proc/{os.getpid()}/environ", "HOME",
                                  "LANG", "LC_ALL", "PATH", "TMPDIR"]  # fmt: skip
    assert out["env"][f"/proc/{os.getpid()}/environ"].startswith("denied")
    assert out["uid"] != 0


@needs_root
async def test_writes_outside_the_workdir_and_reads_of_the_platform_fail(tmp_path: Path) -> None:
    target = tmp_path / "escape.txt"
    os.chmod(tmp_path, 0o777)  # even a world-writable folder is out of reach
    home = Path.home() / f"turbocat-escape-{uuid.uuid4().hex}"
    source = (
        "import os\n"
        "def main(input):\n"
        "    results = {}\n"
        "    for path in input['paths']:\n"
        "        try:\n"
        "            with open(path, 'w') as f:\n"
        "                f.write('x')\n"
        "            results[path] = 'written'\n"
        "        except OSError as exc:\n"
        "            results[path] = exc.strerror\n"
        "    open('inside.txt', 'w').write('fine')\n"
        "    results['inside'] = open(os.path.join(os.getcwd(), 'inside.txt')).read()\n"
        "    try:\n"
        "        results['source'] = open(input['platform']).read()[:10]\n"
        "    except OSError as exc:\n"
        "        results['source'] = exc.strerror\n"
        "    return results\n"
    )
    paths = [str(target), "/tmp/turbocat-escape.txt", str(home), "/dev/shm/turbocat-escape"]
    out = await run(source, {"paths": paths, "platform": code.__file__})
    assert out.pop("inside") == "fine"
    assert out == {**dict.fromkeys(paths, "Permission denied"), "source": "Permission denied"}
    for path in paths:
        assert not os.path.exists(path)


@needs_root
async def test_network_and_dangerous_syscalls_are_refused() -> None:
    source = (
        "import ctypes, os, socket\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "def raw(name, *args):\n"
        "    if getattr(libc, name)(*args) != 0:\n"
        "        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))\n"
        "def main(input):\n"
        "    out = {}\n"
        "    for name, call in [('socket', lambda: socket.socket()),\n"
        "                       ('unix', lambda: socket.socket(socket.AF_UNIX)),\n"
        "                       ('setsid', os.setsid), ('kill1', lambda: os.kill(1, 0)),\n"
        "                       ('unshare', lambda: raw('unshare', 0x10000000)),\n"
        "                       ('ptrace', lambda: raw('ptrace', 16, os.getppid(), 0, 0))]:\n"
        "        try:\n"
        "            call()\n"
        "            out[name] = 'allowed'\n"
        "        except OSError as exc:\n"
        "            out[name] = exc.strerror\n"
        "    return out\n"
    )
    out = await run(source)
    assert "allowed" not in out.values(), out


async def test_memory_hog_is_stopped() -> None:
    err = await fails("def main(input):\n    x = bytearray(1024 * 1024 * 1024)\n    return 1\n",
                      "code_memory", memory_mb=96)  # fmt: skip
    assert "96 MB" in err.message and not err.retryable
    # growing bit by bit ends the same way
    await fails("def main(input):\n    x = []\n    while True:\n        x.append(' ' * 65536)\n",
                "code_memory", memory_mb=96)  # fmt: skip


async def test_infinite_loop_hits_the_cpu_limit() -> None:
    started = time.monotonic()
    # a long wall clock, so that on a loaded machine the CPU limit still ends it first
    err = await fails("def main(input):\n    while True:\n        pass\n", "code_timeout", cpu=1,
                      wall_clock_margin_seconds=20)  # fmt: skip
    assert err.details["limit"] == "cpu" and not err.retryable
    assert time.monotonic() - started < 15


async def test_sleeping_code_hits_the_wall_clock() -> None:
    started = time.monotonic()
    err = await fails("import time\ndef main(input):\n    time.sleep(60)\n", "code_timeout",
                      cpu=1, timeout=1.0)  # fmt: skip
    assert err.details == {"limit": "wall_clock", "seconds": 1.0} and err.retryable
    assert time.monotonic() - started < 8
    no_leftovers()


async def test_large_file_write_is_refused() -> None:
    err = await fails("def main(input):\n    open('big', 'wb').write(b'x' * (3 << 20))\n",
                      "code_error", max_file_size_mb=1)  # fmt: skip
    assert "File too large" in err.message


@needs_root
async def test_fork_bomb_is_contained_and_cleaned_up() -> None:
    source = (
        "import os\n"
        "def main(input):\n"
        "    while True:\n"
        "        try:\n"
        "            os.fork()\n"
        "        except OSError:\n"
        "            pass\n"
    )
    started = time.monotonic()
    await fails(source, "code_timeout", cpu=1, timeout=1.5, max_processes=8)
    assert time.monotonic() - started < 10
    no_leftovers()
    # the worker is unharmed: the next step runs normally
    assert await run("def main(input):\n    return 'alive'\n") == "alive"


@needs_root
async def test_processes_left_behind_are_killed() -> None:
    source = (
        "import os, time\n"
        "def main(input):\n"
        "    if os.fork() == 0:\n"
        "        time.sleep(60)\n"
        "    return 'done'\n"
    )
    assert await run(source) == "done"
    no_leftovers()


async def test_workdir_is_private_and_removed() -> None:
    source = (
        "import os, stat\n"
        "def main(input, context):\n"
        "    st = os.stat(context['workdir'])\n"
        "    return {'dir': context['workdir'], 'cwd': os.getcwd(), 'mode': stat.S_IMODE(st.st_mode)}\n"
    )
    out = await run(source)
    assert out["dir"] == out["cwd"] and out["mode"] == 0o700
    assert not os.path.exists(out["dir"])


async def test_cancelling_the_step_kills_the_process() -> None:
    import asyncio

    call, _ = invocation("import time\ndef main(input):\n    time.sleep(60)\n", cpu=30)
    task = asyncio.ensure_future(code.invoke(call))
    await asyncio.sleep(0.5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    no_leftovers()


def test_refused_without_isolation_unless_degraded() -> None:
    weak = process.Isolation(separate_uid=False, seccomp=False, landlock_abi=0)
    with pytest.raises(process.SandboxUnavailable) as caught:
        process.check_isolation(CodeRuntimeSettings(), weak)
    assert "allow_degraded" in str(caught.value) and "separate uid" in str(caught.value)
    with pytest.raises(process.SandboxUnavailable, match="seccomp"):
        process.check_isolation(CodeRuntimeSettings(), process.Isolation(True, False, 7))
    process.check_isolation(CodeRuntimeSettings(allow_degraded=True), weak)
    process.check_isolation(CodeRuntimeSettings(), process.Isolation(True, True, 0))


async def test_degraded_mode_says_so_in_the_logs() -> None:
    call, services = invocation("def main(input):\n    return 1\n", allow_degraded=True)
    assert await code.invoke(call) == 1
    assert services.logs[0][0] == LogLevel.WARN and "degraded" in services.logs[0][1]


async def test_exit_and_signals_are_named() -> None:
    err = await fails("import os\ndef main(input):\n    os._exit(3)\n", "code_exit")
    assert "status 3" in err.message
    err = await fails("import os, signal\ndef main(input):\n    os.kill(os.getpid(), signal.SIGTERM)\n",
                      "code_killed")  # fmt: skip
    assert err.details == {"signal": "SIGTERM"}
    err = await fails("import os\ndef main(input):\n    os.kill(os.getpid(), 40)\n", "code_killed")
    assert err.details == {"signal": "40"}
    err = await fails("import sys\ndef main(input):\n    sys.exit(2)\n", "code_error")
    assert "exit(2)" in err.message


@needs_root
async def test_a_lock_folder_made_by_someone_else_is_not_trusted(tmp_path: Path) -> None:
    folder = tmp_path / "locks"
    folder.mkdir()
    os.chown(folder, 12345, 12345)
    err = await fails("def main(input):\n    return 1\n", "code_sandbox_unavailable",
                      state_dir=folder)  # fmt: skip
    assert "not a directory of the worker's own user" in err.message


@needs_root
async def test_only_the_standard_library_and_no_programs() -> None:
    source = (
        "import os, subprocess, sys\n"
        "def main(input):\n"
        "    out = {}\n"
        "    for name in ('jmespath', 'turbocat', 'pydantic'):\n"
        "        try:\n"
        "            __import__(name)\n"
        "            out[name] = 'imported'\n"
        "        except ImportError:\n"
        "            out[name] = 'missing'\n"
        "    for cmd in (['/bin/sh', '-c', 'id'], [sys.executable, '-c', 'print(1)']):\n"
        "        try:\n"
        "            subprocess.run(cmd, capture_output=True)\n"
        "            out[cmd[0]] = 'ran'\n"
        "        except OSError as exc:\n"
        "            out[cmd[0]] = exc.strerror\n"
        "    with open('run.sh', 'w') as f:\n"
        "        f.write('#!/bin/sh\\necho hi\\n')\n"
        "    os.chmod('run.sh', 0o700)\n"
        "    try:\n"
        "        subprocess.run(['./run.sh'])\n"
        "        out['own'] = 'ran'\n"
        "    except OSError as exc:\n"
        "        out['own'] = exc.strerror\n"
        "    import json, decimal, zoneinfo, sqlite3, ssl, ctypes\n"
        "    return out\n"
    )
    out = await run(source)
    assert out.pop("jmespath") == out.pop("turbocat") == out.pop("pydantic") == "missing"
    assert set(out.values()) == {"Permission denied"}, out


async def test_the_interpreter_is_a_setting() -> None:
    err = await fails("def main(input):\n    return 1\n", "code_sandbox_unavailable",
                      python="/nonexistent/python3")  # fmt: skip
    assert "cannot start the interpreter /nonexistent/python3" in err.message
    if os.path.exists("/usr/bin/python3"):  # the system's, beside the worker's own
        source = "import sys\ndef main(input):\n    return sys.version_info[0]\n"
        assert await run(source, python="/usr/bin/python3") == 3
