# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Cython twin of ``smtpkit/_speedups_py.py``: reply parsing and DATA encoding.

The pure module is the specification; this one must behave identically for every input
and every chunking (the test suite and the fuzz harness check it). Exceptions and the
Reply type are defined once in Python and imported here.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, _PyBytes_Resize
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.object cimport PyObject
from cpython.ref cimport Py_DECREF, Py_INCREF
from cpython.tuple cimport PyTuple_SET_ITEM
from cpython.type cimport PyType_GenericAlloc
from libc.stdint cimport uint64_t
from libc.string cimport memchr, memcpy

import sys

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

__all__ = [
    "ReplyParser",
    "DataEncoder",
    "encode_data",
    "MAX_LINE_LENGTH",
    "MAX_REPLY_BYTES",
    "MAX_REPLY_LINES",
    "MAX_DATA_LINE_LENGTH",
]

cdef object _Reply = Reply
# Filling a freshly allocated tuple subtype directly is the fastest way to build a Reply;
# it relies on the tuple layout of CPython 3.11-3.13 (3.14 adds a cached hash field).
cdef bint _direct_alloc = sys.version_info < (3, 14)


cdef inline object _make_reply(int code, object message):
    cdef object reply
    cdef object pycode = code
    if not _direct_alloc:
        return _Reply(pycode, message)
    reply = PyType_GenericAlloc(_Reply, 2)
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
    cdef char* _text              # text of the reply in progress, lines joined by LF
    cdef Py_ssize_t _tlen
    cdef Py_ssize_t _tcap
    cdef int _code
    cdef Py_ssize_t _nbytes
    cdef Py_ssize_t _nlines
    cdef object _error

    def __cinit__(self):
        self._buf = NULL
        self._text = NULL

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
        self._tlen = 0
        self._code = 0
        self._nbytes = 0
        self._nlines = 0
        self._error = None

    def __dealloc__(self):
        PyMem_Free(self._buf)
        PyMem_Free(self._text)

    @property
    def pending(self):
        """Bytes received but not yet returned in a reply (a partial line or reply)."""
        return self._blen + self._nbytes

    def reset(self):
        """Forget any partial data (before a TLS handshake); return how many bytes."""
        dropped = self._blen + self._nbytes
        self._blen = 0
        self._tlen = 0
        self._code = 0
        self._nbytes = 0
        self._nlines = 0
        return dropped

    def feed(self, data):
        """Add received bytes; return every reply they complete, in order."""
        cdef const unsigned char* p
        cdef const unsigned char* lf
        cdef Py_ssize_t n, pos, k, m
        cdef Py_ssize_t limit = self.max_line_length
        cdef object keep
        cdef list replies = []
        if self._error is not None:
            raise parser_broken(self._error)
        keep = _get_buffer(data, &p, &n)
        try:
            pos = 0
            if self._blen:
                lf = <const unsigned char*>memchr(p, 0x0A, n)
                if lf == NULL:
                    if self._blen + n >= limit:
                        raise reply_error("line-too-long", limit=limit)
                    memcpy(self._buf + self._blen, p, n)
                    self._blen += n
                    return replies
                k = lf - p + 1
                if self._blen + k > limit:
                    raise reply_error("line-too-long", limit=limit)
                memcpy(self._buf + self._blen, p, k)
                self._line(self._buf, self._blen + k, replies)
                self._blen = 0
                pos = k
            while pos < n:
                m = n - pos
                if m > limit:
                    m = limit
                lf = <const unsigned char*>memchr(p + pos, 0x0A, m)
                if lf == NULL:
                    if n - pos >= limit:
                        raise reply_error("line-too-long", limit=limit)
                    memcpy(self._buf, p + pos, n - pos)
                    self._blen = n - pos
                    break
                k = lf - (p + pos) + 1
                self._line(p + pos, k, replies)
                pos += k
        except SMTPProtocolError as exc:
            exc.replies = replies
            self._error = exc
            raise
        return replies

    cdef int _line(self, const unsigned char* line, Py_ssize_t size, list replies) except -1:
        cdef Py_ssize_t n = size - 1          # without the LF
        cdef Py_ssize_t i, a, b
        cdef int code
        cdef unsigned char c
        cdef bint last
        if n and line[n - 1] == 0x0D:
            n -= 1
        if (n < 3 or not (0x30 <= line[0] <= 0x39) or not (0x30 <= line[1] <= 0x39)
                or not (0x30 <= line[2] <= 0x39) or (n > 3 and line[3] != 0x20 and line[3] != 0x2D)):
            raise reply_error("malformed", PyBytes_FromStringAndSize(<char*>line, n))
        code = (line[0] - 0x30) * 100 + (line[1] - 0x30) * 10 + (line[2] - 0x30)
        if code < 200 or code >= 600:
            raise reply_error("code-range", PyBytes_FromStringAndSize(<char*>line, n))
        for i in range(4, n):
            c = line[i]
            if (c < 0x20 and c != 0x09) or c == 0x7F:
                raise reply_error("control-char", PyBytes_FromStringAndSize(<char*>line, n))
        if self._code and code != self._code:
            raise reply_error("mixed-codes", PyBytes_FromStringAndSize(<char*>line, n))
        self._code = code
        self._nbytes += size
        if self._nbytes > self.max_reply_bytes:
            raise reply_error("reply-too-long", limit=self.max_reply_bytes)
        self._nlines += 1
        if self._nlines > self.max_reply_lines:
            raise reply_error("too-many-lines", limit=self.max_reply_lines)
        # the text, stripped of spaces and tabs on both sides
        a = 4 if n > 4 else n
        b = n
        while a < b and (line[a] == 0x20 or line[a] == 0x09):
            a += 1
        while b > a and (line[b - 1] == 0x20 or line[b - 1] == 0x09):
            b -= 1
        last = n == 3 or line[3] == 0x20
        if last and self._nlines == 1:
            replies.append(_make_reply(code, PyBytes_FromStringAndSize(<char*>line + a, b - a)))
            self._code = 0
            self._nbytes = 0
            self._nlines = 0
            return 0
        self._append_text(line + a, b - a, self._nlines > 1)
        if last:
            replies.append(_make_reply(code, PyBytes_FromStringAndSize(self._text, self._tlen)))
            self._code = 0
            self._nbytes = 0
            self._nlines = 0
            self._tlen = 0
        return 0

    cdef int _append_text(self, const unsigned char* s, Py_ssize_t k, bint sep) except -1:
        cdef Py_ssize_t need = self._tlen + k + 1
        cdef Py_ssize_t cap
        cdef char* grown
        if need > self._tcap:
            cap = self._tcap * 2 if self._tcap else 256
            while cap < need:
                cap *= 2
            grown = <char*>PyMem_Realloc(self._text, cap)
            if grown == NULL:
                raise MemoryError()
            self._text = grown
            self._tcap = cap
        if sep:
            self._text[self._tlen] = 0x0A
            self._tlen += 1
        memcpy(self._text + self._tlen, s, k)
        self._tlen += k
        return 0


# --------------------------------------------------------------------------------------
# DATA
# --------------------------------------------------------------------------------------

cdef struct EncState:
    bint last_cr        # the previous byte was a CR, already sent as CRLF
    bint bol            # the next byte starts a line
    bint started        # any output yet
    Py_ssize_t line_start
    Py_ssize_t offset


cdef inline bint _has_special(uint64_t v) noexcept nogil:
    # a byte equal to NUL, LF or CR somewhere in the word (exact, no false positives)
    cdef uint64_t lo = 0x0101010101010101ULL
    cdef uint64_t hi = 0x8080808080808080ULL
    cdef uint64_t a = v
    cdef uint64_t b = v ^ 0x0A0A0A0A0A0A0A0AULL
    cdef uint64_t c = v ^ 0x0D0D0D0D0D0D0D0DULL
    return (((a - lo) & ~a) | ((b - lo) & ~b) | ((c - lo) & ~c)) & hi != 0


cdef inline Py_ssize_t _run_end(const unsigned char* p, Py_ssize_t i, Py_ssize_t n) noexcept nogil:
    """Index of the first NUL, LF or CR at or after ``i`` (or ``n``)."""
    cdef uint64_t v
    cdef unsigned char c
    while i + 8 <= n:
        memcpy(&v, p + i, 8)
        if _has_special(v):
            break
        i += 8
    while i < n:
        c = p[i]
        if c == 0x0D or c == 0x0A or c == 0:
            return i
        i += 1
    return n


cdef object _encode(EncState* st, const unsigned char* p, Py_ssize_t n, Py_ssize_t limit,
                    object src, bint final):
    """Encode ``p[:n]`` from state ``st``; commit the new state only on success.

    Returns the encoded bytes (with the end-of-data sequence when ``final``), or ``src``
    itself when it is ``bytes``, nothing changed and ``final`` is false.
    """
    cdef bint bol = st.bol
    cdef bint started = st.started
    cdef Py_ssize_t base = st.offset
    cdef Py_ssize_t line_start = st.line_start
    cdef Py_ssize_t line_len
    cdef Py_ssize_t i = 0, j, o = 0
    cdef unsigned char c
    cdef object result = None
    cdef char* out = NULL
    cdef PyObject* tmp

    if n and st.last_cr and p[0] == 0x0A:   # the LF of a CRLF split across chunks
        i = 1
        line_start = base + 1
    line_len = base + i - line_start
    if i:                                    # dropping that LF is a change
        result = PyBytes_FromStringAndSize(NULL, 2 * n + 5)
        out = PyBytes_AS_STRING(result)

    while i < n:
        c = p[i]
        if c == 0x0D or c == 0x0A:
            if c == 0x0D and i + 1 < n and p[i + 1] == 0x0A:
                if out != NULL:
                    out[o] = 0x0D
                    out[o + 1] = 0x0A
                    o += 2
                i += 2
            else:
                if out == NULL:
                    result = PyBytes_FromStringAndSize(NULL, i + 2 * (n - i) + 5)
                    out = PyBytes_AS_STRING(result)
                    memcpy(out, p, i)
                    o = i
                out[o] = 0x0D
                out[o + 1] = 0x0A
                o += 2
                i += 1
            bol = True
            started = True
            line_start = base + i
            line_len = 0
            continue
        if c == 0:
            raise nul_in_data(base + i)
        if bol and c == 0x2E:
            if out == NULL:
                result = PyBytes_FromStringAndSize(NULL, i + 2 * (n - i) + 5)
                out = PyBytes_AS_STRING(result)
                memcpy(out, p, i)
                o = i
            out[o] = 0x2E
            o += 1
        bol = False
        started = True
        j = _run_end(p, i + 1, n)
        if limit and line_len + (j - i) > limit:
            raise line_too_long_in_data(line_start, limit)
        line_len += j - i
        if out != NULL:
            memcpy(out + o, p + i, j - i)
            o += j - i
        i = j

    if final:
        if out == NULL:
            result = PyBytes_FromStringAndSize(NULL, n + 5)
            out = PyBytes_AS_STRING(result)
            memcpy(out, p, n)
            o = n
        if started and bol:
            memcpy(out + o, b".\r\n", 3)
            o += 3
        else:
            memcpy(out + o, b"\r\n.\r\n", 5)
            o += 5
    elif out == NULL:
        if type(src) is bytes:
            result = src
        else:
            result = PyBytes_FromStringAndSize(<char*>p, n)
        o = -1
    if o >= 0:
        tmp = <PyObject*>result
        Py_INCREF(result)           # _PyBytes_Resize needs the only other reference
        result = None
        _PyBytes_Resize(&tmp, o)
        result = <object>tmp
        Py_DECREF(result)           # back to the single reference held by ``result``

    if n:
        st.last_cr = p[n - 1] == 0x0D
        st.bol = bol
        st.started = started
        st.line_start = line_start
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
