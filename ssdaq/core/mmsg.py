"""ctypes declarations of Linux's ``recvmmsg(2)``/``sendmmsg(2)`` and their structures.

The standard library has neither call; both move many datagrams per system call, which is
what the receivers (batched reading) and the camera simulator (batched sending) need.
"""

import ctypes


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
