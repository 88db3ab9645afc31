"""The first code of a sandboxed ``code`` step: confine this process, then run the user's main.

Run by ``sandbox/process.py`` as a script of a fresh interpreter (``python -I -S -B``, so no
site-packages, user paths or PYTHON* variables apply), started as root in a new session with a
scrubbed environment and its private working directory as cwd. Standard library only: it never
imports turbocat. It reads one JSON request on stdin and, in this order, applies the limits
before any user code exists in the process:

1. rlimits (CPU, address space, processes, open files, file size, no core files);
2. a separate uid/gid with no supplementary groups (when started as root);
3. ``no_new_privs`` (set-uid binaries and file capabilities grant nothing any more);
4. Landlock, when the kernel has it: writes only inside the working directory, reads only of
   the interpreter's standard library and system libraries, no TCP, no signals outside;
5. a seccomp filter (through libseccomp, loaded with ctypes): no sockets unless the operator
   allows network, no ptrace, namespaces, mounts, keyrings, bpf, io_uring, new sessions...

A layer the parent marked as required that cannot be applied ends the process with a
``sandbox`` failure before the user's source is even compiled. The outcome is one JSON document
written to the inherited result descriptor: ``{"ok": true, "output": ...}`` or
``{"ok": false, "kind": ..., "message": ..., "traceback": ...}``.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import linecache
import os
import resource
import signal
import sys
import traceback
from typing import Any

USER_FILENAME = "<code>"

# prctl options
PR_SET_DUMPABLE = 4
PR_SET_NO_NEW_PRIVS = 38

# Landlock (include/uapi/linux/landlock.h); the syscall numbers are the same on every arch
SYS_LANDLOCK_CREATE_RULESET = 444
SYS_LANDLOCK_ADD_RULE = 445
SYS_LANDLOCK_RESTRICT_SELF = 446
LANDLOCK_CREATE_RULESET_VERSION = 1
LANDLOCK_RULE_PATH_BENEATH = 1
FS_EXECUTE = 1 << 0
FS_WRITE_FILE = 1 << 1
FS_READ_FILE = 1 << 2
FS_READ_DIR = 1 << 3
FS_ABI1_ALL = (1 << 13) - 1
FS_REFER = 1 << 13  # ABI 2
FS_TRUNCATE = 1 << 14  # ABI 3
FS_IOCTL_DEV = 1 << 15  # ABI 5
NET_BIND_TCP = 1 << 0  # ABI 4
NET_CONNECT_TCP = 1 << 1
SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0  # ABI 6
SCOPE_SIGNAL = 1 << 1
FILE_ACCESS = FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE | FS_IOCTL_DEV

# readable by the user code besides the interpreter's own module directories
SYSTEM_READ_PATHS = (
    "/usr/lib", "/usr/lib64", "/lib", "/lib64", "/usr/share/zoneinfo", "/etc/localtime",
    "/etc/ssl", "/dev/null", "/dev/zero", "/dev/urandom", "/proc/self", "/proc/cpuinfo",
    "/proc/meminfo", "/sys/devices/system/cpu",
)  # fmt: skip

# seccomp (libseccomp's seccomp.h)
SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_CMP_NE = 1
SCMP_CMP_MASKED_EQ = 7
ERRNO_EPERM = 0x00050000 | 1
ERRNO_EACCES = 0x00050000 | 13
ERRNO_ENOSYS = 0x00050000 | 38
DENIED_SYSCALLS = (
    "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd", "kcmp",
    "mount", "umount2", "pivot_root", "chroot", "unshare", "setns", "mount_setattr",
    "fsopen", "fsconfig", "fsmount", "fspick", "move_mount", "open_tree",
    "keyctl", "add_key", "request_key", "bpf", "perf_event_open", "userfaultfd",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    "reboot", "swapon", "swapoff", "acct", "quotactl", "syslog", "vhangup",
    "open_by_handle_at", "name_to_handle_at", "fanotify_init", "lookup_dcookie",
    "settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "iopl", "ioperm",
    # a new session or group would escape the parent's kill of the process group
    "setsid", "setpgid",
)  # fmt: skip
CLONE_NAMESPACE_FLAGS = (
    0x00000080, 0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000,
    0x40000000,
)  # fmt: skip  # NEWTIME NEWNS NEWCGROUP NEWUTS NEWIPC NEWUSER NEWPID NEWNET


class SandboxError(Exception):
    """A confinement layer that was required could not be applied."""


class LandlockRulesetAttr(ctypes.Structure):
    _fields_ = [
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    ]


class LandlockPathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


class ScmpArgCmp(ctypes.Structure):
    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _errno_text() -> str:
    return os.strerror(ctypes.get_errno())


def set_rlimits(limits: dict[str, int]) -> None:
    names = {
        "cpu": resource.RLIMIT_CPU, "as": resource.RLIMIT_AS, "data": resource.RLIMIT_DATA,
        "nproc": resource.RLIMIT_NPROC, "nofile": resource.RLIMIT_NOFILE,
        "fsize": resource.RLIMIT_FSIZE, "core": resource.RLIMIT_CORE,
    }  # fmt: skip
    for name, value in limits.items():
        # CPU: SIGXCPU at the soft limit, SIGKILL one second later if it is caught
        hard = value + 1 if name == "cpu" else value
        resource.setrlimit(names[name], (value, hard))


def drop_privileges(uid: int, gid: int) -> None:
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)  # as root: real, effective and saved ids
    if os.getuid() != uid or os.geteuid() != uid or os.getegid() != gid:
        raise SandboxError("the uid/gid switch did not take effect")
    try:
        os.setuid(0)
    except PermissionError:
        return
    raise SandboxError("root could be regained after the uid switch")


def prctl(option: int, value: int) -> None:
    if _libc.prctl(option, value, 0, 0, 0) != 0:
        raise SandboxError(f"prctl({option}) failed: {_errno_text()}")


def landlock_abi() -> int:
    abi = int(_libc.syscall(SYS_LANDLOCK_CREATE_RULESET, None, 0, LANDLOCK_CREATE_RULESET_VERSION))
    return max(abi, 0)


def open_rule_paths(workdir: str, read_paths: list[str]) -> list[tuple[int, int]]:
    """O_PATH descriptors of the Landlock rules, opened before the uid switch: the sandbox uid
    may not be able to reach the standard library's directory by name."""
    # no execute right anywhere: shared libraries are mapped, not executed, so nothing of
    # Python needs it, and no program (a shell, another interpreter) can be started
    rules = [(workdir, -1)] + [(path, FS_READ_FILE | FS_READ_DIR) for path in read_paths]
    opened = []
    for path, access in rules:
        try:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            continue  # a system path this machine does not have
        if not os.path.isdir(path):
            access &= FILE_ACCESS
        opened.append((fd, access))
    return opened


def apply_landlock(rules: list[tuple[int, int]], network: bool) -> int:
    """Restrict the filesystem (and TCP, and signals) for this process and its children to
    ``rules`` (descriptor, access; -1 = everything). Returns the ABI used, 0 without Landlock."""
    abi = landlock_abi()
    if abi == 0:
        return 0
    fs = FS_ABI1_ALL
    if abi >= 2:
        fs |= FS_REFER
    if abi >= 3:
        fs |= FS_TRUNCATE
    if abi >= 5:
        fs |= FS_IOCTL_DEV
    attr = LandlockRulesetAttr(fs, 0, 0)
    size = 8
    if abi >= 4 and not network:
        attr.handled_access_net = NET_BIND_TCP | NET_CONNECT_TCP  # no rule: all denied
        size = 16
    if abi >= 6:
        attr.scoped = SCOPE_SIGNAL | SCOPE_ABSTRACT_UNIX_SOCKET
        size = 24
    ruleset = int(_libc.syscall(SYS_LANDLOCK_CREATE_RULESET, ctypes.byref(attr), size, 0))
    if ruleset < 0:
        raise SandboxError(f"landlock_create_ruleset failed: {_errno_text()}")
    try:
        for fd, access in rules:
            rule = LandlockPathBeneathAttr((fs & ~FS_EXECUTE) if access == -1 else access & fs, fd)
            if _libc.syscall(SYS_LANDLOCK_ADD_RULE, ruleset, LANDLOCK_RULE_PATH_BENEATH,
                             ctypes.byref(rule), 0) != 0:  # fmt: skip
                raise SandboxError(f"landlock_add_rule failed: {_errno_text()}")
        if _libc.syscall(SYS_LANDLOCK_RESTRICT_SELF, ruleset, 0) != 0:
            raise SandboxError(f"landlock_restrict_self failed: {_errno_text()}")
    finally:
        os.close(ruleset)
        for fd, _ in rules:
            os.close(fd)
    return abi


def apply_seccomp(network: bool) -> None:
    try:
        lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    except OSError:
        # find_library runs ldconfig (tens of ms): only when the usual soname is not there
        from ctypes import util

        name = util.find_library("seccomp")
        try:
            lib = ctypes.CDLL(name, use_errno=True)
        except OSError as exc:
            raise SandboxError(f"libseccomp is not available: {exc}") from None
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.restype = ctypes.c_int
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.restype = ctypes.c_int
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint, ctypes.c_void_p,
    ]  # fmt: skip
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    ctx = lib.seccomp_init(SCMP_ACT_ALLOW)
    if not ctx:
        raise SandboxError("seccomp_init failed")

    def rule(action: int, syscall: str, *cmps: tuple[int, int, int, int]) -> None:
        number = lib.seccomp_syscall_resolve_name(syscall.encode())
        if number < 0:
            return  # not a syscall of this architecture
        array = (ScmpArgCmp * max(len(cmps), 1))(*[ScmpArgCmp(*c) for c in cmps])
        rc = lib.seccomp_rule_add_array(ctx, action, number, len(cmps), array)
        if rc < 0:
            raise SandboxError(f"seccomp rule for {syscall} failed: {os.strerror(-rc)}")

    try:
        for syscall in DENIED_SYSCALLS:
            rule(ERRNO_EPERM, syscall)
        for flag in CLONE_NAMESPACE_FLAGS:
            rule(ERRNO_EPERM, "clone", (0, SCMP_CMP_MASKED_EQ, flag, flag))
        # clone3 passes its flags in memory a filter cannot read: glibc falls back to clone
        rule(ERRNO_ENOSYS, "clone3")
        if not network:
            rule(ERRNO_EACCES, "socket")
        rc = lib.seccomp_load(ctx)
        if rc < 0:
            raise SandboxError(f"seccomp_load failed: {os.strerror(-rc)}")
    finally:
        lib.seccomp_release(ctx)


def module_path_fds() -> None:
    """Keep the interpreter's module directories reachable after the uid switch.

    The standard library may live where the sandbox uid cannot look (a pyenv under /root):
    a descriptor opened now, as root, and reached through /proc/self/fd, needs no search
    permission on the directories above it."""
    entries = []
    for entry in sys.path:
        if entry and os.path.isdir(entry):
            fd = os.open(entry, os.O_PATH | os.O_DIRECTORY)
            entries.append(f"/proc/self/fd/{fd}")
    sys.path[:] = entries
    sys.path_importer_cache.clear()


def confine(request: dict[str, Any]) -> None:
    os.umask(0o077)
    read_paths = [p for p in sys.path if p] + list(SYSTEM_READ_PATHS)
    landlock = request.get("landlock", "off")
    rules = open_rule_paths(request["workdir"], read_paths) if landlock != "off" else []
    uid = request.get("uid")
    if uid is not None:
        module_path_fds()
        drop_privileges(uid, request["gid"])
        # the uid switch made this process undumpable, and /proc/self root's: give it back
        prctl(PR_SET_DUMPABLE, 1)
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    network = bool(request.get("network"))
    if landlock != "off" and apply_landlock(rules, network) == 0 and landlock == "require":
        raise SandboxError("the kernel has no Landlock")
    if request.get("seccomp") == "require":
        apply_seccomp(network)
    elif request.get("seccomp") == "try":
        with contextlib.suppress(SandboxError):
            apply_seccomp(network)
    # last, so that setting up the layers above is not bound by the user's memory limit
    set_rlimits(request["rlimits"])
    # an oversized write fails with EFBIG (an exception the user sees), not a silent kill
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def _user_traceback(exc: BaseException) -> str:
    """The traceback from the user's frames on: the bootstrap's own frames are noise."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != USER_FILENAME:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


def run_user(request: dict[str, Any]) -> dict[str, Any]:
    source: str = request["source"]
    linecache.cache[USER_FILENAME] = (len(source), None, source.splitlines(True), USER_FILENAME)
    namespace: dict[str, Any] = {"__name__": "__turbocat_code__", "__builtins__": __builtins__}
    try:
        code = compile(source, USER_FILENAME, "exec")
        exec(code, namespace)  # noqa: S102 - running it is the point, in this confined process
        main = namespace.get("main")
        if not callable(main):
            return {"ok": False, "kind": "missing_main", "message": "define main(input)"}
        function_code = getattr(main, "__code__", None)
        wants_context = function_code is not None and (
            function_code.co_argcount >= 2 or bool(function_code.co_flags & 0x04)  # *args
        )
        args = (request["input"], request["context"]) if wants_context else (request["input"],)
        result = main(*args)
        if hasattr(result, "__await__"):
            import asyncio

            async def _await() -> Any:
                return await result

            result = asyncio.run(_await())
    except MemoryError:
        return {"ok": False, "kind": "memory", "message": "the code ran out of memory"}
    except SystemExit as exc:
        message = f"the code called exit({exc.code!r}) instead of returning from main"
        return {"ok": False, "kind": "error", "message": message, "traceback": None}
    except BaseException as exc:  # the user's error, reported with the user's traceback
        message = f"{type(exc).__name__}: {exc}"
        return {"ok": False, "kind": "error", "message": message,
                "traceback": _user_traceback(exc)}  # fmt: skip
    try:
        encoded = json.dumps(result, allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        return {"ok": False, "kind": "result_not_json",
                "message": f"main returned {type(result).__name__}, not JSON: {exc}"}  # fmt: skip
    except RecursionError:
        return {"ok": False, "kind": "result_not_json",
                "message": "main returned a structure nested too deeply (or circular)"}  # fmt: skip
    return {"ok": True, "output_json": encoded}


def write_result(fd: int, outcome: dict[str, Any], max_bytes: int) -> None:
    encoded = outcome.pop("output_json", None)
    data = json.dumps(outcome).encode()
    if encoded is not None:
        data = ('{"ok": true, "output": ' + encoded + "}").encode()
        if len(data) > max_bytes:
            message = f"the result is {len(data)} bytes, over the limit of {max_bytes}"
            too_large = {"ok": False, "kind": "result_too_large", "message": message}
            data = json.dumps(too_large).encode()
    os.lseek(fd, 0, os.SEEK_SET)
    os.ftruncate(fd, 0)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def main() -> None:
    pid = os.getpid()
    request = json.loads(sys.stdin.buffer.read())
    result_fd: int = request["result_fd"]
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    try:
        confine(request)
    except Exception as exc:  # fail closed: the user's code is never compiled
        message = f"sandbox setup failed: {type(exc).__name__}: {exc}"
        outcome = {"ok": False, "kind": "sandbox", "message": message}
        write_result(result_fd, outcome, 1 << 20)
        os._exit(0)
    outcome = run_user(request)
    if os.getpid() != pid:
        os._exit(1)  # a process the user code forked must not write the step's result
    sys.stdout.flush()
    try:
        write_result(result_fd, outcome, int(request["max_result_bytes"]))
    except OSError as exc:
        os.write(2, f"turbocat: could not write the result: {exc}\n".encode())
        os._exit(1)
    os._exit(0)


if __name__ == "__main__":
    main()
