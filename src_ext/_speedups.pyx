# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Cython twin of ``smtpkit/_speedups_py.py``: reply parsing and DATA encoding.

The pure module is the specification; this one must behave identically for every input
and every chunking (the test suite and the fuzz harness check it). Exceptions and the
Reply type are defined once in Python and imported here.

The byte scanning itself is C, in ``_hotpath.h`` (SSE2 on x86-64, NEON on ARM, a
portable fallback elsewhere or with ``-DSMTPKIT_NO_SIMD``); this module does the rest:
state, limits, Python objects and errors.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, _PyBytes_Resize
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.object cimport PyObject
from cpython.ref cimport Py_DECREF, Py_INCREF, Py_XDECREF
from cpython.tuple cimport PyTuple_SET_ITEM
from libc.string cimport memchr, memcpy

cimport cython

import os
import sys
import warnings

from smtpkit._speedups_py import (
    MAX_DATA_LINE_LENGTH,
    MAX_LINE_LENGTH,
    MAX_REPLY_BYTES,
    MAX_REPLY_LINES,
)
from smtpkit.errors import (
    SMTPProtocolError,
    line_too_long_in_data,
    nul_in_data,
    parser_broken,
    reply_error,
)
from smtpkit.reply import Reply


cdef extern from "_hotpath.h":
    const char* sk_simd_name
    ctypedef struct sk_enc_state:
        Py_ssize_t i
        Py_ssize_t o
        Py_ssize_t ls
        Py_ssize_t err
    enum:
        SK_OK
        SK_NUL
        SK_LONG
        SK_OUT_SLACK
        SK_MALFORMED
        SK_CODE_RANGE
    int sk_reply_code(const unsigned char* s, Py_ssize_t n) nogil
    ctypedef struct sk_ctl_iter:
        pass
    void sk_ctl_init(sk_ctl_iter* it, const unsigned char* p, Py_ssize_t n) nogil
    Py_ssize_t sk_ctl_next(sk_ctl_iter* it, Py_ssize_t start) nogil
    ctypedef struct sk_reply_acc:
        int code
        Py_ssize_t nbytes
        Py_ssize_t nlines
        char* text
        Py_ssize_t tlen
        Py_ssize_t tcap
    int sk_reply_line(sk_reply_acc* acc, const unsigned char* line, Py_ssize_t n,
                      Py_ssize_t size, Py_ssize_t max_bytes, Py_ssize_t max_lines,
                      const char** msg, Py_ssize_t* mlen) nogil
    int sk_encode_scan(const unsigned char* p, Py_ssize_t n, Py_ssize_t limit,
                       sk_enc_state* st) nogil
    int sk_encode(const unsigned char* p, Py_ssize_t n, Py_ssize_t limit, unsigned char* out,
                  sk_enc_state* st) nogil
    const char* sk_encode_names[3]
    int sk_encode_count
    const char* sk_encode_kernel_name
    void sk_encode_init()
    int sk_encode_use(int k)

cdef extern from "Python.h":
    const Py_ssize_t PY_SSIZE_T_MAX
    void Py_SET_SIZE(PyObject* o, Py_ssize_t size)
    # the same as cpython.bytes', returning a reference that Cython does not manage
    PyObject* _new_bytes "PyBytes_FromStringAndSize"(const char* v, Py_ssize_t n) except NULL

__all__ = [
    "ReplyParser",
    "DataEncoder",
    "encode_data",
    "MAX_LINE_LENGTH",
    "MAX_REPLY_BYTES",
    "MAX_REPLY_LINES",
    "MAX_DATA_LINE_LENGTH",
]

_SIMD = (<bytes>sk_simd_name).decode("ascii")  # which build of _hotpath.h: sse2, neon, scalar

sk_encode_init()


def _encode_kernels():
    """Names of the DATA encoder kernels this build has and this CPU runs, best last
    (``_SIMD``'s, then ``"avx2"`` and ``"avx512"`` on x86-64 CPUs that have them)."""
    return tuple((<bytes>sk_encode_names[k]).decode("ascii") for k in range(sk_encode_count))


def _encode_kernel():
    """The name of the DATA encoder kernel in use (the best one, unless changed)."""
    return (<bytes>sk_encode_kernel_name).decode("ascii")


def _use_encode_kernel(name):
    """Use the DATA encoder kernel ``name`` (one of ``_encode_kernels()``) from now on;
    return the previous one's name. For tests and benchmarks: every kernel gives the same
    bytes."""
    previous = _encode_kernel()
    names = _encode_kernels()
    if name not in names:
        raise ValueError(f"no DATA encoder kernel {name!r} here (have {', '.join(names)})")
    sk_encode_use(names.index(name))
    return previous


# SMTPKIT_ENCODE_KERNEL=<name> chooses the kernel from the start (benchmarks, tests).
if os.environ.get("SMTPKIT_ENCODE_KERNEL"):
    try:
        _use_encode_kernel(os.environ["SMTPKIT_ENCODE_KERNEL"])
    except ValueError as exc:
        warnings.warn(f"SMTPKIT_ENCODE_KERNEL ignored: {exc}", RuntimeWarning, stacklevel=1)

cdef object _Reply = Reply
# Filling a freshly allocated tuple subtype directly is the fastest way to build a Reply;
# it relies on the tuple layout of CPython 3.11-3.13 (3.14 adds a cached hash field).
cdef bint _direct_alloc = sys.version_info < (3, 14)

cdef extern from *:
    """
    /* A tuple subtype instance of n items, for the caller to fill at once; not tracked by
     * the garbage collector (unlike PyType_GenericAlloc's): a Reply holds an int and a
     * bytes, so it can never be part of a reference cycle. This saves a third of the cost
     * of a reply (zeroing, linking into and unlinking from the collector's list). */
    #define SK_NEW_TUPLE_SUBTYPE(tp, n) \\
        ((PyObject *)PyObject_GC_NewVar(PyTupleObject, (PyTypeObject *)(tp), (n)))
    """
    object SK_NEW_TUPLE_SUBTYPE(object tp, Py_ssize_t n)


cdef inline object _make_reply(int code, object message):
    cdef object reply
    cdef object pycode = code
    if not _direct_alloc:
        return _Reply(pycode, message)
    reply = SK_NEW_TUPLE_SUBTYPE(_Reply, 2)
    Py_INCREF(pycode)
    PyTuple_SET_ITEM(reply, 0, pycode)
    Py_INCREF(message)
    PyTuple_SET_ITEM(reply, 1, message)
    return reply


cdef inline object _get_buffer(object data, const unsigned char** p, Py_ssize_t* n):
    """Point ``p``/``n`` at the bytes of ``data``; return what keeps them alive."""
    cdef const unsigned char[::1] view
    if type(data) is bytes:
        p[0] = <const unsigned char*>PyBytes_AS_STRING(data)
        n[0] = len(<bytes>data)
        return data
    if isinstance(data, str):
        raise TypeError("expected a bytes-like object, not str")
    view = memoryview(data).cast("B")
    n[0] = view.shape[0]
    p[0] = &view[0] if n[0] else <const unsigned char*>b""
    return view


# --------------------------------------------------------------------------------------
# Replies
# --------------------------------------------------------------------------------------

cdef class ReplyParser:
    """Incremental reply parser; see ``smtpkit._speedups_py.ReplyParser`` for the rules."""

    cdef readonly Py_ssize_t max_line_length
    cdef readonly Py_ssize_t max_reply_bytes
    cdef readonly Py_ssize_t max_reply_lines
    cdef unsigned char* _buf      # partial line, always shorter than max_line_length
    cdef Py_ssize_t _blen
    cdef sk_reply_acc _acc        # the reply in progress (code, size, text so far)
    cdef object _error

    def __cinit__(self):
        self._buf = NULL
        self._acc.text = NULL
        self._acc.tcap = 0

    def __init__(self, Py_ssize_t max_line_length=MAX_LINE_LENGTH,
                 Py_ssize_t max_reply_bytes=MAX_REPLY_BYTES,
                 Py_ssize_t max_reply_lines=MAX_REPLY_LINES):
        if max_line_length < 5 or max_reply_bytes < 5 or max_reply_lines < 1:
            raise ValueError("reply limits are too small")
        self.max_line_length = max_line_length
        self.max_reply_bytes = max_reply_bytes
        self.max_reply_lines = max_reply_lines
        PyMem_Free(self._buf)
        self._buf = <unsigned char*>PyMem_Malloc(max_line_length)
        if self._buf == NULL:
            raise MemoryError()
        self._blen = 0
        self._acc.tlen = 0
        self._acc.code = 0
        self._acc.nbytes = 0
        self._acc.nlines = 0
        self._error = None

    def __dealloc__(self):
        PyMem_Free(self._buf)
        PyMem_Free(self._acc.text)

    @property
    def pending(self):
        """Bytes received but not yet returned in a reply (a partial line or reply)."""
        return self._blen + self._acc.nbytes

    def reset(self):
        """Forget any partial data (before a TLS handshake); return how many bytes."""
        dropped = self._blen + self._acc.nbytes
        self._blen = 0
        self._acc.tlen = 0
        self._acc.code = 0
        self._acc.nbytes = 0
        self._acc.nlines = 0
        return dropped

    def feed(self, data):
        """Add received bytes; return every reply they complete, in order."""
        cdef const unsigned char* p
        cdef Py_ssize_t n
        cdef object keep
        cdef list replies = []
        if self._error is not None:
            raise parser_broken(self._error)
        keep = _get_buffer(data, &p, &n)
        try:
            self._feed(p, n, replies)
        except SMTPProtocolError as exc:
            exc.replies = replies
            self._error = exc
            raise
        return replies

    @cython.final
    cdef int _feed(self, const unsigned char* p, Py_ssize_t n, list replies) except -1:
        cdef const unsigned char* lf
        cdef Py_ssize_t pos = 0, j, k, m
        cdef Py_ssize_t limit = self.max_line_length
        cdef Py_ssize_t max_bytes = self.max_reply_bytes, max_lines = self.max_reply_lines
        cdef sk_ctl_iter ctl
        cdef const char* msg
        cdef Py_ssize_t mlen
        cdef int code
        if self._blen:
            # the end of a line that began in an earlier chunk: assemble it in _buf
            lf = <const unsigned char*>memchr(p, 0x0A, n)
            if lf == NULL:
                if self._blen + n >= limit:
                    raise reply_error("line-too-long", limit=limit)
                memcpy(self._buf + self._blen, p, n)
                self._blen += n
                return 0
            k = lf - p + 1
            if self._blen + k > limit:
                raise reply_error("line-too-long", limit=limit)
            memcpy(self._buf + self._blen, p, k)
            self._line_checked(self._buf, self._blen + k, replies)
            self._blen = 0
            pos = k
        sk_ctl_init(&ctl, p, n)
        while pos < n:
            # Fast path: one scan finds the first control character other than TAB. On a
            # good line that is its end (LF, or CR LF), and the text is known to be clean.
            j = sk_ctl_next(&ctl, pos)
            if j < n:
                if p[j] == 0x0A:
                    k = j + 1 - pos
                elif p[j] == 0x0D and j + 1 < n and p[j + 1] == 0x0A:
                    k = j + 2 - pos
                else:
                    k = 0  # anything else: the slow path below decides
                if k:
                    if k > limit:
                        raise reply_error("line-too-long", limit=limit)
                    code = sk_reply_line(&self._acc, p + pos, j - pos, k, max_bytes, max_lines,
                                         &msg, &mlen)
                    if code > 0:
                        replies.append(_make_reply(code, PyBytes_FromStringAndSize(msg, mlen)))
                    elif code < 0:
                        self._line(p + pos, j - pos, k, replies)  # the full path decides
                    pos += k
                    continue
                # A control character inside the line, or a CR ending the chunk: find the
                # LF (none before j) and let the full check report the fault in order.
                m = n - pos
                if m > limit:
                    m = limit
                lf = NULL
                if j - pos < m:
                    lf = <const unsigned char*>memchr(p + j, 0x0A, m - (j - pos))
                if lf != NULL:
                    k = lf - (p + pos) + 1
                    self._line_checked(p + pos, k, replies)
                    pos += k
                    continue
            # no LF: a partial line, kept for the next chunk
            if n - pos >= limit:
                raise reply_error("line-too-long", limit=limit)
            memcpy(self._buf, p + pos, n - pos)
            self._blen = n - pos
            break
        return 0

    @cython.final
    cdef int _line_checked(self, const unsigned char* line, Py_ssize_t size, list replies) except -1:
        """A line of ``size`` bytes ending in LF, that may hold anything."""
        cdef Py_ssize_t n = size - 1          # without the LF
        cdef Py_ssize_t i
        cdef unsigned char c
        if n and line[n - 1] == 0x0D:
            n -= 1
        for i in range(4, n):  # the text
            c = line[i]
            if (c < 0x20 and c != 0x09) or c == 0x7F:
                if sk_reply_code(line, n) >= 0:  # "malformed" and "code-range" come first
                    raise reply_error("control-char", PyBytes_FromStringAndSize(<char*>line, n))
                break
        return self._line(line, n, size, replies)

    @cython.final
    cdef int _line_fault(self, const unsigned char* line, Py_ssize_t n, Py_ssize_t size) except -1:
        """Raise the error of a line that ``sk_reply_line`` did not take, in the order of the
        rules (over a cap, the line is counted first, as the pure twin does); return 0 when
        the line is good and only the text buffer must grow."""
        cdef int code = sk_reply_code(line, n)
        if code < 0:
            raise reply_error("malformed" if code == SK_MALFORMED else "code-range",
                              PyBytes_FromStringAndSize(<char*>line, n))
        if self._acc.code and code != self._acc.code:
            raise reply_error("mixed-codes", PyBytes_FromStringAndSize(<char*>line, n))
        if self._acc.nbytes + size > self.max_reply_bytes or self._acc.nlines >= self.max_reply_lines:
            self._acc.code = code
            self._acc.nbytes += size
            self._acc.nlines += 1
            if self._acc.nbytes > self.max_reply_bytes:
                raise reply_error("reply-too-long", limit=self.max_reply_bytes)
            raise reply_error("too-many-lines", limit=self.max_reply_lines)
        return 0

    @cython.final
    cdef int _line(self, const unsigned char* line, Py_ssize_t n, Py_ssize_t size,
                   list replies) except -1:
        """A line whose text holds no control character but TAB: ``n`` bytes without the
        line ending, ``size`` with it. ``_hotpath.h``'s ``sk_reply_line`` does the work;
        a line it does not take is faulty (``_line_fault`` raises) or needs a bigger text
        buffer, which is grown before the line is taken."""
        cdef const char* msg
        cdef Py_ssize_t mlen
        cdef int code = sk_reply_line(&self._acc, line, n, size, self.max_reply_bytes,
                                      self.max_reply_lines, &msg, &mlen)
        if code < 0:
            self._line_fault(line, n, size)
            self._grow_text(self._acc.tlen + n + 1)
            code = sk_reply_line(&self._acc, line, n, size, self.max_reply_bytes,
                                 self.max_reply_lines, &msg, &mlen)
        if code > 0:
            replies.append(_make_reply(code, PyBytes_FromStringAndSize(msg, mlen)))
        return 0

    @cython.final
    cdef int _grow_text(self, Py_ssize_t need) except -1:
        """Make room for ``need`` bytes of reply text (doubling, from 256)."""
        cdef Py_ssize_t cap
        cdef char* grown
        if need <= self._acc.tcap:
            return 0
        cap = self._acc.tcap * 2 if self._acc.tcap else 256
        while cap < need:
            cap *= 2
        grown = <char*>PyMem_Realloc(self._acc.text, cap)
        if grown == NULL:
            raise MemoryError()
        self._acc.text = grown
        self._acc.tcap = cap
        return 0


# --------------------------------------------------------------------------------------
# DATA
# --------------------------------------------------------------------------------------

cdef struct EncState:
    bint last_cr        # the previous byte was a CR, already sent as CRLF
    bint bol            # the next byte starts a line (line_start == offset)
    bint started        # any output yet
    Py_ssize_t line_start
    Py_ssize_t offset


cdef int _fail(int status, Py_ssize_t offset, Py_ssize_t limit) except -1:
    if status == SK_NUL:
        raise nul_in_data(offset)
    raise line_too_long_in_data(offset, limit)


# Output sizing. The encoded size is only known at the end, so the output is allocated
# with room to spare and trimmed afterwards. The first guess is what is kept as it is plus
# the rest with 1/32 more (real text grows far less: one byte per bare CR or LF and per
# stuffed dot); the rest is encoded in segments that fit even if every byte doubled, and
# the buffer grows to that worst case only when a segment would get shorter than
# _MIN_SEGMENT. A large output that ends within its 1/32 of spare room is not trimmed:
# shrinking it would hand glibc's malloc a smaller block at every call, so that a message
# of the same size next time is again above its (adaptive) mmap threshold, and every call
# would pay for fresh pages (page faults cost more than the whole encoding). The bytes
# object then holds up to 1/32 more memory than its length.
cdef enum:
    _MIN_SEGMENT = 16384
    _UNTRIMMED_MIN = 65536


cdef object _encode(EncState* st, const unsigned char* p, Py_ssize_t n, Py_ssize_t limit,
                    object src, bint final):
    """Encode ``p[:n]`` from state ``st``; commit the new state only on success.

    Returns the encoded bytes (with the end-of-data sequence when ``final``), or ``src``
    itself when it is ``bytes``, nothing changed and ``final`` is false.

    Two passes of ``_hotpath.h``: ``sk_encode_scan`` skips, without copying, the prefix
    that needs no change (all of a chunk that is already CRLF text without leading dots);
    ``sk_encode`` encodes the rest into a new bytes object.
    """
    cdef Py_ssize_t base = st.offset
    cdef Py_ssize_t skip = 0
    cdef Py_ssize_t scan_limit = limit if limit else PY_SSIZE_T_MAX
    cdef Py_ssize_t cap, kept, rest, room, stop
    cdef sk_enc_state es
    cdef int status
    cdef bint bol, started, grown = False
    cdef object result
    cdef char* out
    cdef PyObject* tmp

    if n and st.last_cr and p[0] == 0x0A:   # the LF of a CRLF split across chunks
        skip = 1
    es.i = skip
    es.o = 0
    es.ls = skip if skip else st.line_start - base
    es.err = 0
    status = sk_encode_scan(p, n, scan_limit, &es)
    if status != SK_OK:
        _fail(status, base + es.err, limit)

    if es.i == n and not final:             # nothing to change
        if skip:
            result = PyBytes_FromStringAndSize(<char*>p + 1, n - 1)
        elif type(src) is bytes:
            result = src
        else:
            result = PyBytes_FromStringAndSize(<char*>p, n)
    else:
        kept = es.i - skip
        rest = n - es.i
        # + 5 for the end of data; + SK_OUT_SLACK for sk_encode's block stores
        cap = kept + rest + (rest >> 5) + 5 + SK_OUT_SLACK
        tmp = _new_bytes(NULL, cap)             # owned by tmp until the end
        try:
            out = PyBytes_AS_STRING(<object>tmp)
            memcpy(out, p + skip, kept)
            es.o = kept
            while es.i < n:
                room = cap - es.o - 5 - SK_OUT_SLACK
                stop = n
                if n - es.i > room // 2:        # the rest might not fit: a segment that does
                    stop = es.i + room // 2
                    if stop - es.i < _MIN_SEGMENT:
                        cap = es.o + 2 * (n - es.i) + 5 + SK_OUT_SLACK
                        _PyBytes_Resize(&tmp, cap)   # on failure: frees, sets NULL
                        out = PyBytes_AS_STRING(<object>tmp)
                        grown = True
                        continue
                    if p[stop - 1] == 0x0D:     # never between the CR and LF of a CRLF
                        stop -= 1
                status = sk_encode(p, stop, scan_limit, <unsigned char*>out, &es)
                if status != SK_OK:
                    _fail(status, base + es.err, limit)
            if final:
                started = st.started or n > skip
                bol = es.ls == n
                if started and bol:
                    memcpy(out + es.o, b".\r\n", 3)
                    es.o += 3
                else:
                    memcpy(out + es.o, b"\r\n.\r\n", 5)
                    es.o += 5
            if grown or es.o < _UNTRIMMED_MIN or cap - es.o > (es.o >> 5) + SK_OUT_SLACK + 5:
                _PyBytes_Resize(&tmp, es.o)
            else:                               # see above: keep the block, set the length
                Py_SET_SIZE(tmp, es.o)
                out[es.o] = 0
        except BaseException:
            Py_XDECREF(tmp)
            raise
        result = <object>tmp                    # a new reference...
        Py_DECREF(result)                       # ...in place of tmp's

    if n:
        st.last_cr = p[n - 1] == 0x0D
        st.bol = es.ls == n
        st.started = st.started or n > skip
        st.line_start = base + es.ls
        st.offset = base + n
    return result


cdef class DataEncoder:
    """Streaming DATA encoder; see ``smtpkit._speedups_py.DataEncoder`` for the rules."""

    cdef readonly Py_ssize_t max_line_length
    cdef EncState _st

    def __init__(self, Py_ssize_t max_line_length=MAX_DATA_LINE_LENGTH):
        if max_line_length < 0:
            raise ValueError("max_line_length must be >= 0")
        self.max_line_length = max_line_length
        self._reset()

    cdef void _reset(self) noexcept:
        self._st.last_cr = False
        self._st.bol = True
        self._st.started = False
        self._st.line_start = 0
        self._st.offset = 0

    def feed(self, data):
        """Encode the next chunk of message data."""
        cdef const unsigned char* p
        cdef Py_ssize_t n
        cdef object keep
        keep = _get_buffer(data, &p, &n)
        if n == 0:
            return b""
        return _encode(&self._st, p, n, self.max_line_length, data, False)

    def finish(self):
        """The end-of-data sequence for what was fed; resets the encoder."""
        end = b".\r\n" if (self._st.started and self._st.bol) else b"\r\n.\r\n"
        self._reset()
        return end


def encode_data(data, Py_ssize_t max_line_length=MAX_DATA_LINE_LENGTH):
    """Encode a whole message for DATA (see ``DataEncoder`` for the rules)."""
    cdef const unsigned char* p
    cdef Py_ssize_t n
    cdef object keep
    cdef EncState st
    if max_line_length < 0:
        raise ValueError("max_line_length must be >= 0")
    keep = _get_buffer(data, &p, &n)
    st.last_cr = False
    st.bol = True
    st.started = False
    st.line_start = 0
    st.offset = 0
    return _encode(&st, p, n, max_line_length, data, True)
