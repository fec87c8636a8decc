"""ctypes declarations of Linux's ``recvmmsg(2)``/``sendmmsg(2)`` and their structures.

The standard library has neither call; both move many datagrams per system call, which is
what the receivers (batched reading) and the camera simulator (batched sending) need.
"""

import ctypes
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np


class IOVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class MsgHdr(ctypes.Structure):
    _fields_ = [
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.POINTER(IOVec)),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    ]


class MMsgHdr(ctypes.Structure):
    _fields_ = [("msg_hdr", MsgHdr), ("msg_len", ctypes.c_uint)]


MMSG_BYTES = ctypes.sizeof(MMsgHdr)

_libc = ctypes.CDLL(None, use_errno=True)
recvmmsg = _libc.recvmmsg
recvmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]
recvmmsg.restype = ctypes.c_int
sendmmsg = _libc.sendmmsg
sendmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
sendmmsg.restype = ctypes.c_int


def headers(rows: "np.ndarray") -> tuple[ctypes.Array[IOVec], ctypes.Array[MMsgHdr]]:
    """One message per row of a 2-d uint8 array, each a single iovec over the row (no copy).

    The caller keeps ``rows`` alive, fills them in place and may set each header's name and
    control fields; the returned arrays must be kept too, as the headers point into them.
    """
    n = len(rows)
    iov, msgs = (IOVec * n)(), (MMsgHdr * n)()
    for i in range(n):
        iov[i].iov_base, iov[i].iov_len = rows[i].ctypes.data, rows.shape[1]
        msgs[i].msg_hdr.msg_iov = ctypes.pointer(iov[i])
        msgs[i].msg_hdr.msg_iovlen = 1
    return iov, msgs


def send_all(fd: int, msgs: ctypes.Array[MMsgHdr], n: int, first: int = 0) -> int:
    """``sendmmsg`` of ``msgs[first .. n-1]`` until every one was tried; returns how many failed.

    A message the kernel refuses (ENOBUFS under overload, ECONNREFUSED) is skipped, as UDP would
    lose it, so that a sender keeps its schedule.
    """
    base = ctypes.addressof(msgs)
    done, failed = first, 0
    while done < n:
        sent = sendmmsg(fd, base + done * MMSG_BYTES, n - done, 0)
        if sent < 0:
            failed += 1
            sent = 1
        done += sent
    return failed
