"""The code sandbox's seccomp filter: no new namespaces, no mounts, no extra kernel attack surface.

A classic BPF program, built here in pure Python and installed by the launcher with
``prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER)`` after ``no_new_privs``, just before it execs the program.
It returns EPERM for the syscalls in ``DENIED`` and for ``clone`` with any namespace flag, ENOSYS for
``clone3`` (its flags sit in memory a filter cannot read; libc then falls back to ``clone``), and
kills the process on any other syscall ABI (i386 ``int 0x80``, x32), whose numbers differ.
Syscall numbers are x86_64's: ``filter_bytes`` refuses to build for another machine.
"""

from __future__ import annotations

import platform
import struct

__all__ = ["DENIED", "NAMESPACE_FLAGS", "filter_bytes"]

# Syscalls a test program never needs and that open namespaces, mounts or rarely hardened kernel code.
DENIED = {
    "ptrace": 101, "vhangup": 153, "pivot_root": 155, "_sysctl": 156, "chroot": 161, "acct": 163,
    "mount": 165, "umount2": 166, "swapon": 167, "swapoff": 168, "reboot": 169, "sethostname": 170,
    "setdomainname": 171, "iopl": 172, "ioperm": 173, "init_module": 175, "delete_module": 176,
    "quotactl": 179, "lookup_dcookie": 212, "kexec_load": 246, "add_key": 248, "request_key": 249,
    "keyctl": 250, "unshare": 272, "perf_event_open": 298, "fanotify_init": 300, "name_to_handle_at": 303,
    "open_by_handle_at": 304, "setns": 308, "process_vm_readv": 310, "process_vm_writev": 311, "kcmp": 312,
    "finit_module": 313, "kexec_file_load": 320, "bpf": 321, "userfaultfd": 323, "io_uring_setup": 425,
    "io_uring_enter": 426, "io_uring_register": 427, "open_tree": 428, "move_mount": 429, "fsopen": 430,
    "fsconfig": 431, "fsmount": 432, "fspick": 433, "pidfd_getfd": 438, "mount_setattr": 442,
}
CLONE, CLONE3 = 56, 435
# CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET (NEWTIME only exists for clone3).
NAMESPACE_FLAGS = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000

_AUDIT_ARCH_X86_64 = 0xC000003E
_X32_SYSCALL_BIT = 0x40000000
_RET_KILL_PROCESS, _RET_ALLOW, _RET_ERRNO = 0x80000000, 0x7FFF0000, 0x00050000
_EPERM, _ENOSYS = 1, 38
# BPF opcodes: load a 32-bit word of seccomp_data, compare with a constant, return.
_LD_ABS, _JEQ, _JGE, _JSET, _RET = 0x20, 0x15, 0x35, 0x45, 0x06
# Offsets in struct seccomp_data: nr, arch, then args[0] (its low 32 bits first on little-endian).
_NR, _ARCH, _ARG0_LOW = 0, 4, 16


def _op(code: int, k: int, jt: int = 0, jf: int = 0) -> tuple[int, int, int, int]:
    return code, jt, jf, k


def _instructions() -> list[tuple[int, int, int, int]]:
    denied = sorted(DENIED.values())
    prog = [
        _op(_LD_ABS, _ARCH), _op(_JEQ, _AUDIT_ARCH_X86_64, jt=1), _op(_RET, _RET_KILL_PROCESS),
        _op(_LD_ABS, _NR), _op(_JGE, _X32_SYSCALL_BIT, jf=1), _op(_RET, _RET_KILL_PROCESS),
        _op(_JEQ, CLONE3, jf=1), _op(_RET, _RET_ERRNO | _ENOSYS),
        _op(_JEQ, CLONE, jf=4), _op(_LD_ABS, _ARG0_LOW), _op(_JSET, NAMESPACE_FLAGS, jf=1),
        _op(_RET, _RET_ERRNO | _EPERM), _op(_RET, _RET_ALLOW),
    ]
    # Each match jumps over the rest of the list and the ALLOW to the final EPERM.
    prog += [_op(_JEQ, nr, jt=len(denied) - i) for i, nr in enumerate(denied)]
    return prog + [_op(_RET, _RET_ALLOW), _op(_RET, _RET_ERRNO | _EPERM)]


def filter_bytes(machine: str | None = None) -> bytes:
    """The filter as an array of ``struct sock_filter`` (native byte order), for ``struct sock_fprog``."""
    machine = machine or platform.machine()
    if machine != "x86_64":
        raise OSError(f"the sandbox's seccomp filter has x86_64 syscall numbers; this machine is {machine}")
    return b"".join(struct.pack("=HBBI", *ins) for ins in _instructions())
