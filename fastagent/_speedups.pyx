# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Compiled twin of :mod:`fastagent._speedups_py`: same names, same results, same exceptions.

Import the public names from :mod:`fastagent.speedups`, which picks the compiled module when
it is available::

    >>> from fastagent.speedups import SSEParser, delta_content
    >>> parser = SSEParser()
    >>> chunk = b'data: {"choices":[{"delta":{"content":"hi"}}]}\\n\\n'
    >>> [delta_content(payload) for payload in parser.feed(chunk)]
    ['hi']
"""

import operator

cimport cython

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc, PyMem_Realloc
from cpython.unicode cimport PyUnicode_DecodeUTF8, PyUnicode_Find, PyUnicode_FindChar
from libc.string cimport memchr, memcmp, memcpy


from fastagent.errors import SSELineTooLong

__all__ = ["SSEParser", "delta_content", "extract_code"]

cdef object _twin_module = None


cdef object _twin():
    """The pure twin, imported on first use: it is only the fallback for unusual input, and
    importing it (its msgspec structs and decoder) costs the measured process ~0.6 MiB."""
    global _twin_module
    if _twin_module is None:
        from fastagent import _speedups_py
        _twin_module = _speedups_py
    return _twin_module


cdef extern from *:
    const Py_ssize_t PY_SSIZE_T_MAX

cdef const unsigned char* _BOM = b"\xef\xbb\xbf"
cdef enum:
    _LF = 10
    _CR = 13
    _RETRY_MAX_DIGITS = 18
    _KEEP_BUFFER = 1 << 16


@cython.final
@cython.auto_pickle(False)
cdef class SSEParser:
    """Incremental ``text/event-stream`` parser (WHATWG rules, on bytes) giving ``data`` payloads.

    >>> parser = SSEParser()
    >>> parser.feed(b"data: a\\r\\ndata: b\\r")
    []
    >>> parser.feed(b"\\n\\r\\n: comment\\ndata: tail")
    [b'a\\nb']
    >>> parser.close()
    [b'tail']

    ``feed(chunk)`` returns the payloads of the events completed by ``chunk``: the ``data``
    lines joined with ``b"\\n"``. Any split of a stream into chunks yields the same payloads.
    Line ends are LF, CR or CRLF (a CRLF split across two chunks is one line end); lines starting
    with ``:`` are comments; a blank line dispatches the event when its data is not empty; a UTF-8
    BOM at the start of the stream is dropped.

    ``close()`` ends the stream: a pending unterminated line is handled as a complete line, then
    an event holding data is dispatched even without its blank line, and the stream state is
    reset, so the next ``feed`` starts a new stream (a leading BOM is dropped again).
    ``last_event_id`` and ``retry`` survive ``close()``, as they do across an EventSource
    reconnection.

    Attributes: ``event`` is the type of the last dispatched event (``b"message"`` when it had no
    ``event`` field; ``None`` before the first); ``last_event_id`` is the value of the last ``id``
    field without NUL (``b""`` at first); ``retry`` is the last ``retry`` field made of 1 to 18
    ASCII digits, as an ``int`` (``None`` at first).

    Raises :class:`~fastagent.errors.SSELineTooLong` as soon as a line, even an unterminated one,
    is longer than ``max_line`` bytes, or an event's data grows past ``max_line`` bytes, so the
    memory held stays bounded. The payloads completed earlier in the same ``feed`` call are lost
    with the exception, and the stream state is reset as by ``close()``: abandon that stream.
    """

    cdef Py_ssize_t _max_line
    cdef public object event
    cdef public bytes last_event_id
    cdef public object retry
    cdef bytes _event_type
    # Bytes of a BOM matched at the start of the stream (0 to 2), or -1 once past the start.
    cdef int _head
    cdef bint _skip_lf
    cdef unsigned char* _line
    cdef Py_ssize_t _line_len, _line_cap
    cdef unsigned char* _data
    cdef Py_ssize_t _data_len, _data_cap
    # The event's first data line is held, not copied, while it is the only one: it points into
    # the chunk being parsed (or the line buffer) and is copied before that chunk is let go.
    cdef const unsigned char* _held
    cdef Py_ssize_t _held_len

    def __init__(self, max_line=1 << 20):
        max_line = operator.index(max_line)
        if max_line < 1:
            raise ValueError("max_line must be at least 1")
        self._max_line = min(max_line, PY_SSIZE_T_MAX - 1)
        self.event = None
        self.last_event_id = b""
        self.retry = None
        self._reset()

    def __dealloc__(self):
        PyMem_Free(self._line)
        PyMem_Free(self._data)

    @property
    def max_line(self):
        """The longest line, and the longest event data, accepted, in bytes."""
        return self._max_line

    cdef void _reset(self) noexcept:
        self._head = 0
        self._skip_lf = False
        self._line_len = 0
        self._data_len = 0
        self._held = NULL
        self._event_type = b""
        if self._line_cap > _KEEP_BUFFER:
            PyMem_Free(self._line)
            self._line = NULL
            self._line_cap = 0
        if self._data_cap > _KEEP_BUFFER:
            PyMem_Free(self._data)
            self._data = NULL
            self._data_cap = 0

    def feed(self, data):
        """Parse the next chunk of the stream; return the payloads of the events it completes."""
        cdef list out = []
        if type(data) is not bytes:
            data = memoryview(data).tobytes()
        self._feed(<const unsigned char*>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), out)
        return out

    def close(self):
        """End the stream: return what it left unfinished and reset the stream state."""
        cdef list out = []
        try:
            if self._head > 0:
                self._append_line(_BOM, self._head)
                self._head = -1
            if self._line_len:
                self._process(self._line, self._line_len, out)
            if self._data_len or self._held != NULL:
                self._dispatch(out)
        finally:
            self._reset()
        return out

    cdef int _feed(self, const unsigned char* p, Py_ssize_t n, list out) except -1:
        cdef Py_ssize_t pos = 0, lf = -1, cr = -1, end, size
        cdef const unsigned char* hit
        if self._head >= 0:
            while self._head < 3 and pos < n and p[pos] == _BOM[self._head]:
                self._head += 1
                pos += 1
            if self._head < 3 and pos == n:
                return 0
            if self._head < 3:
                self._append_line(_BOM, self._head)
            self._head = -1
        if self._skip_lf and pos < n:
            self._skip_lf = False
            if p[pos] == _LF:
                pos += 1
        while pos < n:
            if lf < pos:
                hit = <const unsigned char*>memchr(p + pos, _LF, n - pos)
                lf = n if hit == NULL else hit - p
            if cr < pos:
                hit = <const unsigned char*>memchr(p + pos, _CR, n - pos)
                cr = n if hit == NULL else hit - p
            end = lf if lf < cr else cr
            if end == n:
                break
            if self._line_len:
                self._append_line(p + pos, end - pos)
                size = self._line_len
                self._line_len = 0
                self._process(self._line, size, out)
            else:
                if end - pos > self._max_line:
                    self._line_too_long()
                self._process(p + pos, end - pos, out)
            pos = end + 1
            if end == cr:
                if pos == n:
                    self._skip_lf = True
                elif p[pos] == _LF:
                    pos += 1
        self._keep()
        if pos < n:
            self._append_line(p + pos, n - pos)
        return 0

    cdef int _append_line(self, const unsigned char* s, Py_ssize_t m) except -1:
        cdef Py_ssize_t need = self._line_len + m
        if need > self._max_line:
            self._line_too_long()
        if need > self._line_cap:
            self._line = <unsigned char*>_grow(self._line, &self._line_cap, need, self._max_line)
        memcpy(self._line + self._line_len, s, m)
        self._line_len = need
        return 0

    cdef int _process(self, const unsigned char* s, Py_ssize_t m, list out) except -1:
        cdef const unsigned char* colon
        cdef const unsigned char* v
        cdef Py_ssize_t f, vlen, i
        cdef long long retry
        if m >= 6 and memcmp(s, b"data: ", 6) == 0:
            return self._add_data(s + 6, m - 6)
        if m == 0:
            if self._data_len or self._held != NULL:
                self._dispatch(out)
            self._event_type = b""
            return 0
        if s[0] == c':':
            return 0
        colon = <const unsigned char*>memchr(s, c':', m)
        if colon == NULL:
            f = m
            v = s + m
            vlen = 0
        else:
            f = colon - s
            v = colon + 1
            vlen = m - f - 1
            if vlen and v[0] == c' ':
                v += 1
                vlen -= 1
        if f == 4 and memcmp(s, b"data", 4) == 0:
            return self._add_data(v, vlen)
        if f == 5 and memcmp(s, b"event", 5) == 0:
            self._event_type = PyBytes_FromStringAndSize(<const char*>v, vlen)
        elif f == 2 and memcmp(s, b"id", 2) == 0:
            if memchr(v, 0, vlen) == NULL:
                self.last_event_id = PyBytes_FromStringAndSize(<const char*>v, vlen)
        elif f == 5 and memcmp(s, b"retry", 5) == 0 and 0 < vlen <= _RETRY_MAX_DIGITS:
            retry = 0
            for i in range(vlen):
                if not c'0' <= v[i] <= c'9':
                    return 0
                retry = retry * 10 + (v[i] - c'0')
            self.retry = retry
        return 0

    cdef int _add_data(self, const unsigned char* v, Py_ssize_t vlen) except -1:
        if self._data_len == 0 and self._held == NULL and vlen <= self._max_line:
            self._held = v
            self._held_len = vlen
            return 0
        self._keep()
        return self._append_data(v, vlen)

    cdef int _keep(self) except -1:
        """Copy a held data line into the data buffer."""
        cdef const unsigned char* held = self._held
        if held != NULL:
            self._held = NULL
            self._append_data(held, self._held_len)
        return 0

    cdef int _append_data(self, const unsigned char* v, Py_ssize_t vlen) except -1:
        cdef Py_ssize_t need = self._data_len + vlen
        if need > self._max_line:
            self._reset()
            raise SSELineTooLong(f"SSE event data longer than {self._max_line} bytes")
        if need >= self._data_cap:
            self._data = <unsigned char*>_grow(self._data, &self._data_cap, need + 1, self._max_line + 1)
        memcpy(self._data + self._data_len, v, vlen)
        self._data[need] = _LF
        self._data_len = need + 1
        return 0

    cdef int _dispatch(self, list out) except -1:
        if self._held != NULL:
            out.append(PyBytes_FromStringAndSize(<const char*>self._held, self._held_len))
            self._held = NULL
        else:
            out.append(PyBytes_FromStringAndSize(<const char*>self._data, self._data_len - 1))
            self._data_len = 0
        self.event = self._event_type or b"message"
        self._event_type = b""
        return 0

    cdef int _line_too_long(self) except -1:
        self._reset()
        raise SSELineTooLong(f"SSE line longer than {self._max_line} bytes")


cdef void* _grow(void* buf, Py_ssize_t* cap, Py_ssize_t need, Py_ssize_t limit) except NULL:
    """Reallocate ``buf`` to hold ``need`` bytes, doubling up to ``limit``; update ``cap``."""
    cdef Py_ssize_t size = cap[0] * 2 if cap[0] else 256
    if size < need:
        size = need
    if size > limit:
        size = limit
    cdef void* grown = PyMem_Realloc(buf, size)
    if grown == NULL:
        raise MemoryError()
    cap[0] = size
    return grown


# delta_content: a validating single-pass JSON scanner for the common chunk shape. It returns a
# result only for input that is valid UTF-8 and RFC 8259 JSON whose schema-relevant parts have the
# expected types and no duplicate or escaped keys; anything else goes to the msgspec path of the
# pure twin, which then decides the result or the MalformedChunk. It relies on the NUL byte that
# CPython keeps after the contents of every bytes object: p[n] is readable and valid nowhere in
# JSON, so testing a byte's value also stops at the end without a separate bounds check.

cdef enum:
    _FAST = 0
    _SLOW = 1
    _MAX_DEPTH = 64

cdef struct _Scan:
    const unsigned char* p
    Py_ssize_t n
    Py_ssize_t i

cdef struct _Str:
    Py_ssize_t start
    Py_ssize_t end
    bint escaped
    bint present


cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>

    /* Byte-at-a-time tables: 1 for a byte that may stand unescaped in a JSON string and needs
       no further check (printable ASCII but the quote and the backslash), 1 for a digit. */
    static unsigned char fa_plain[256], fa_digit[256];

    static void fa_init_tables(void) {
        for (int b = 0; b < 256; b++) {
            fa_plain[b] = b >= 0x20 && b < 0x80 && b != 0x22 && b != 0x5C;
            fa_digit[b] = b >= 0x30 && b <= 0x39;
        }
    }

    #if defined(__GNUC__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    #define FA_SWAR 1
    #define FA_ONES 0x0101010101010101ULL
    #define FA_HIGH 0x8080808080808080ULL
    /* Eight bytes at a time: each mask has the high bit set in the bytes to stop at; a stray bit
       can only sit above a true one, so the lowest set bit is exact. */
    static inline uint64_t fa_load(const unsigned char *p) {
        uint64_t w;
        memcpy(&w, p, 8);
        return w;
    }
    static inline uint64_t fa_zero_bytes(uint64_t w) { return (w - FA_ONES) & ~w & FA_HIGH; }
    #else
    #define FA_SWAR 0
    #endif

    #if defined(__SSE2__)
    #include <emmintrin.h>
    #define FA_SSE2 1
    #else
    #define FA_SSE2 0
    #endif

    /* Index of the first byte at or after i that ends a run of plain string bytes (p[n] must be
       readable); *quote tells whether that byte is a quote, read from the mask when possible. */
    static inline Py_ssize_t fa_string_run(const unsigned char *p, Py_ssize_t i, Py_ssize_t n,
                                           int *quote) {
    #if FA_SSE2
        /* Signed compare: "below 0x20" also catches 0x80-0xFF, which read as negative. */
        const __m128i dq = _mm_set1_epi8(0x22), bs = _mm_set1_epi8(0x5C), sp = _mm_set1_epi8(0x20);
        for (; i + 16 <= n; i += 16) {
            __m128i v = _mm_loadu_si128((const __m128i *)(p + i));
            unsigned q = (unsigned)_mm_movemask_epi8(_mm_cmpeq_epi8(v, dq));
            unsigned m = q | (unsigned)_mm_movemask_epi8(
                _mm_or_si128(_mm_cmpeq_epi8(v, bs), _mm_cmplt_epi8(v, sp)));
            if (m) {
                *quote = (m & (0u - m) & q) != 0;
                return i + __builtin_ctz(m);
            }
        }
    #endif
    #if FA_SWAR
        for (; i + 8 <= n; i += 8) {
            uint64_t w = fa_load(p + i);
            uint64_t q = fa_zero_bytes(w ^ (FA_ONES * 0x22));
            uint64_t m = q | fa_zero_bytes(w ^ (FA_ONES * 0x5C))
                         | ((((w - FA_ONES * 0x20) & ~w) | w) & FA_HIGH);
            if (m) {
                *quote = (m & (0 - m) & q) != 0;
                return i + (__builtin_ctzll(m) >> 3);
            }
        }
    #endif
        while (i < n && fa_plain[p[i]]) i++;
        *quote = p[i] == 0x22;
        return i;
    }

    /* Index of the first non-digit at or after i. */
    static inline Py_ssize_t fa_digit_run(const unsigned char *p, Py_ssize_t i, Py_ssize_t n) {
    #if FA_SWAR
        for (; i + 8 <= n; i += 8) {
            uint64_t w = fa_load(p + i);
            uint64_t high = (w & 0xF0F0F0F0F0F0F0F0ULL) ^ (FA_ONES * 0x30);
            uint64_t m = ((((high & ~FA_HIGH) + ~FA_HIGH) | high)
                          | ((((w & (FA_ONES * 0x0F)) + FA_ONES * 6) & (FA_ONES * 0x10)) << 3))
                         & FA_HIGH;
            if (m) return i + (__builtin_ctzll(m) >> 3);
        }
    #endif
        while (i < n && fa_digit[p[i]]) i++;
        return i;
    }
    """
    void fa_init_tables() noexcept nogil
    Py_ssize_t fa_string_run(const unsigned char* p, Py_ssize_t i, Py_ssize_t n, int* quote) noexcept nogil
    Py_ssize_t fa_digit_run(const unsigned char* p, Py_ssize_t i, Py_ssize_t n) noexcept nogil

fa_init_tables()


cdef inline void _ws(_Scan* s) noexcept nogil:
    cdef unsigned char c = s.p[s.i]
    while c <= c' ' and (c == c' ' or c == c'\n' or c == c'\r' or c == c'\t'):
        s.i += 1
        c = s.p[s.i]


cdef inline int _hex4(const unsigned char* p) noexcept nogil:
    """The code unit of the 4 hex digits at ``p`` (read up to the first non-hex byte), or -1."""
    cdef int value = 0, k
    cdef unsigned char c
    for k in range(4):
        c = p[k]
        if c'0' <= c <= c'9':
            value = value * 16 + (c - c'0')
        elif c'a' <= c <= c'f':
            value = value * 16 + (c - c'a' + 10)
        elif c'A' <= c <= c'F':
            value = value * 16 + (c - c'A' + 10)
        else:
            return -1
    return value


cdef inline Py_ssize_t _utf8(const unsigned char* p, Py_ssize_t left) noexcept nogil:
    """Length of the strict UTF-8 sequence at ``p`` (lead byte >= 0x80), or 0 if invalid."""
    cdef unsigned char c0 = p[0], lo = 0x80, hi = 0xBF
    cdef Py_ssize_t k, size
    if c0 < 0xC2:
        return 0
    elif c0 < 0xE0:
        size = 2
    elif c0 < 0xF0:
        size = 3
        if c0 == 0xE0:
            lo = 0xA0
        elif c0 == 0xED:
            hi = 0x9F
    elif c0 < 0xF5:
        size = 4
        if c0 == 0xF0:
            lo = 0x90
        elif c0 == 0xF4:
            hi = 0x8F
    else:
        return 0
    if left < size or not lo <= p[1] <= hi:
        return 0
    for k in range(2, size):
        if not 0x80 <= p[k] <= 0xBF:
            return 0
    return size


cdef inline int _string(_Scan* s, _Str* out) noexcept nogil:
    """Scan the string at ``s.i`` (on its quote); record its contents' span in ``out``."""
    cdef const unsigned char* p = s.p
    cdef Py_ssize_t i = s.i + 1, k
    cdef unsigned char c
    cdef int unit, quote
    out.start = i
    out.escaped = False
    while True:
        i = fa_string_run(p, i, s.n, &quote)
        if quote:
            break
        c = p[i]
        if c == c'\\':
            out.escaped = True
            c = p[i + 1]
            if c == c'u':
                unit = _hex4(p + i + 2)
                i += 6
                if 0xD800 <= unit < 0xDC00:
                    if p[i] != c'\\' or p[i + 1] != c'u':
                        return _SLOW
                    unit = _hex4(p + i + 2)
                    i += 6
                    if not 0xDC00 <= unit < 0xE000:
                        return _SLOW
                elif unit < 0 or 0xDC00 <= unit < 0xE000:
                    return _SLOW
            elif (c == c'"' or c == c'\\' or c == c'/' or c == c'b' or c == c'f' or c == c'n'
                  or c == c'r' or c == c't'):
                i += 2
            else:
                return _SLOW
        elif c < 0x80:
            return _SLOW
        else:
            k = _utf8(p + i, s.n - i)
            if k == 0:
                return _SLOW
            i += k
    out.end = i
    out.present = True
    s.i = i + 1
    return _FAST


cdef inline int _number(_Scan* s) noexcept nogil:
    cdef const unsigned char* p = s.p
    cdef Py_ssize_t i = s.i, digits
    if p[i] == c'-':
        i += 1
    if p[i] == c'0':
        i += 1
    elif c'1' <= p[i] <= c'9':
        i = fa_digit_run(p, i + 1, s.n)
    else:
        return _SLOW
    if p[i] == c'.':
        digits = i + 1
        i = fa_digit_run(p, digits, s.n)
        if i == digits:
            return _SLOW
    if p[i] == c'e' or p[i] == c'E':
        i += 1
        if p[i] == c'+' or p[i] == c'-':
            i += 1
        digits = i
        i = fa_digit_run(p, digits, s.n)
        if i == digits:
            return _SLOW
    s.i = i
    return _FAST


cdef inline int _literal(_Scan* s, const char* word, Py_ssize_t size) noexcept nogil:
    if s.i + size > s.n or memcmp(s.p + s.i, word, size) != 0:
        return _SLOW
    s.i += size
    return _FAST


cdef inline int _colon(_Scan* s) noexcept nogil:
    _ws(s)
    if s.p[s.i] != c':':
        return _SLOW
    s.i += 1
    _ws(s)
    return _FAST


cdef inline int _key(_Scan* s, _Str* key) noexcept nogil:
    """Scan an object key and the colon after it; keys that are not plain ASCII go the slow way."""
    cdef Py_ssize_t end
    cdef int quote
    if s.p[s.i] != c'"':
        return _SLOW
    end = fa_string_run(s.p, s.i + 1, s.n, &quote)
    if not quote:
        return _SLOW
    key.start = s.i + 1
    key.end = end
    s.i = end + 1
    return _colon(s)


cdef inline bint _is(_Scan* s, _Str* key, const char* name, Py_ssize_t size) noexcept nogil:
    return key.end - key.start == size and memcmp(s.p + key.start, name, size) == 0


cdef inline int _next(_Scan* s, unsigned char close, bint* done) noexcept nogil:
    """After a member: step over ``,`` (done False) or the closing bracket (done True)."""
    _ws(s)
    if s.p[s.i] == c',':
        s.i += 1
        _ws(s)
        done[0] = False
        return _FAST
    if s.p[s.i] == close:
        s.i += 1
        done[0] = True
        return _FAST
    return _SLOW


cdef inline bint _opens(_Scan* s, unsigned char close) noexcept nogil:
    """Step into the object or array at ``s.i``; True when it is empty (and stepped over)."""
    s.i += 1
    _ws(s)
    if s.p[s.i] == close:
        s.i += 1
        return True
    return False


cdef int _value(_Scan* s, int depth) noexcept nogil:
    """Skip the value at ``s.i``, validating it."""
    cdef unsigned char c = s.p[s.i], close
    cdef bint done
    cdef _Str key
    if c == c'"':
        return _string(s, &key)
    if c == c'-' or c'0' <= c <= c'9':
        return _number(s)
    if c == c't':
        return _literal(s, "true", 4)
    if c == c'f':
        return _literal(s, "false", 5)
    if c == c'n':
        return _literal(s, "null", 4)
    if depth >= _MAX_DEPTH:
        return _SLOW
    if c == c'{':
        close = c'}'
    elif c == c'[':
        close = c']'
    else:
        return _SLOW
    done = _opens(s, close)
    while not done:
        if close == c'}' and _key(s, &key):
            return _SLOW
        if _value(s, depth + 1) or _next(s, close, &done):
            return _SLOW
    return _FAST


cdef int _message(_Scan* s, _Str* content) noexcept nogil:
    """A ``delta`` or ``message`` object at ``s.i``: its ``content`` must be a string or null."""
    cdef _Str key
    cdef bint seen = False
    cdef bint done = _opens(s, c'}')
    while not done:
        if _key(s, &key):
            return _SLOW
        if _is(s, &key, "content", 7):
            if seen:
                return _SLOW
            seen = True
            if s.p[s.i] == c'"':
                if _string(s, content):
                    return _SLOW
            elif _literal(s, "null", 4):
                return _SLOW
        elif _value(s, 3):
            return _SLOW
        if _next(s, c'}', &done):
            return _SLOW
    return _FAST


cdef inline int _member(_Scan* s, bint* seen, bint* is_object, _Str* content) noexcept nogil:
    """The value of a choice's ``delta`` or ``message``: an object or null, once."""
    if seen[0]:
        return _SLOW
    seen[0] = True
    if s.p[s.i] == c'{':
        is_object[0] = True
        return _message(s, content)
    return _literal(s, "null", 4)


cdef int _choice(_Scan* s, _Str* content) noexcept nogil:
    """A choice object at ``s.i``; ``content`` gets the content it yields."""
    cdef _Str key, delta, message
    cdef bint seen_delta = False, seen_message = False
    cdef bint delta_object = False, message_object = False
    cdef bint done = _opens(s, c'}')
    delta.present = False
    message.present = False
    while not done:
        if _key(s, &key):
            return _SLOW
        if _is(s, &key, "delta", 5):
            if _member(s, &seen_delta, &delta_object, &delta):
                return _SLOW
        elif _is(s, &key, "message", 7):
            if _member(s, &seen_message, &message_object, &message):
                return _SLOW
        elif _value(s, 2):
            return _SLOW
        if _next(s, c'}', &done):
            return _SLOW
    if delta_object:
        content[0] = delta
    elif message_object:
        content[0] = message
    return _FAST


cdef int _choices(_Scan* s, _Str* content) noexcept nogil:
    """The ``choices`` array at ``s.i``: objects, the first of which gives ``content``."""
    cdef _Str ignored
    cdef bint done = _opens(s, c']'), first = True
    while not done:
        if s.p[s.i] != c'{':
            return _SLOW
        if _choice(s, content if first else &ignored) or _next(s, c']', &done):
            return _SLOW
        first = False
    return _FAST


cdef int _chunk(_Scan* s, _Str* content) noexcept nogil:
    """A whole payload: an object whose ``choices`` is null or an array of choice objects."""
    cdef _Str key
    cdef bint done, seen = False
    _ws(s)
    if s.p[s.i] != c'{':
        return _SLOW
    done = _opens(s, c'}')
    while not done:
        if _key(s, &key):
            return _SLOW
        if _is(s, &key, "choices", 7):
            if seen:
                return _SLOW
            seen = True
            if s.p[s.i] == c'[':
                if _choices(s, content):
                    return _SLOW
            elif _literal(s, "null", 4):
                return _SLOW
        elif _value(s, 1):
            return _SLOW
        if _next(s, c'}', &done):
            return _SLOW
    _ws(s)
    return _FAST if s.i == s.n else _SLOW


cdef str _unescape(const unsigned char* p, Py_ssize_t start, Py_ssize_t end):
    """Decode the validated escaped string contents ``p[start:end]``."""
    cdef unsigned char small[256]
    cdef unsigned char* buf = small
    cdef Py_ssize_t i = start, o = 0
    cdef unsigned char c
    cdef unsigned int cp
    if end - start > 256:
        buf = <unsigned char*>PyMem_Malloc(end - start)
        if buf == NULL:
            raise MemoryError()
    try:
        while i < end:
            c = p[i]
            if c != c'\\':
                buf[o] = c
                o += 1
                i += 1
                continue
            c = p[i + 1]
            i += 2
            if c == c'u':
                cp = <unsigned int>_hex4(p + i)
                i += 4
                if 0xD800 <= cp < 0xDC00:
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (<unsigned int>_hex4(p + i + 2) - 0xDC00)
                    i += 6
                if cp < 0x80:
                    buf[o] = cp
                    o += 1
                elif cp < 0x800:
                    buf[o] = 0xC0 | (cp >> 6)
                    buf[o + 1] = 0x80 | (cp & 0x3F)
                    o += 2
                elif cp < 0x10000:
                    buf[o] = 0xE0 | (cp >> 12)
                    buf[o + 1] = 0x80 | ((cp >> 6) & 0x3F)
                    buf[o + 2] = 0x80 | (cp & 0x3F)
                    o += 3
                else:
                    buf[o] = 0xF0 | (cp >> 18)
                    buf[o + 1] = 0x80 | ((cp >> 12) & 0x3F)
                    buf[o + 2] = 0x80 | ((cp >> 6) & 0x3F)
                    buf[o + 3] = 0x80 | (cp & 0x3F)
                    o += 4
            else:
                if c == c'b':
                    c = c'\b'
                elif c == c'f':
                    c = c'\f'
                elif c == c'n':
                    c = c'\n'
                elif c == c'r':
                    c = c'\r'
                elif c == c't':
                    c = c'\t'
                buf[o] = c
                o += 1
        return PyUnicode_DecodeUTF8(<const char*>buf, o, NULL)
    finally:
        if buf != small:
            PyMem_Free(buf)


def delta_content(payload):
    """Return ``choices[0].delta.content`` of a chat.completion(.chunk) JSON payload, or None.

    >>> delta_content(b'{"choices":[{"index":0,"delta":{"content":" foo"}}]}')
    ' foo'
    >>> delta_content(b'{"choices":[],"usage":{"total_tokens":3}}') is None
    True

    ``choices[0].message.content`` is used when ``choices[0]`` has no (or a null) ``delta``, as in
    a non-streamed ``chat.completion`` body. None when choices, the delta or the content is
    absent or null. Raises :class:`~fastagent.errors.MalformedChunk` for malformed JSON (the
    ``[DONE]`` sentinel included), invalid UTF-8 anywhere, nesting too deep to decode, or the
    wrong shape: a top level that is not an object, ``choices`` not an array of objects,
    ``delta``/``message`` not objects, ``content`` not a string.
    """
    cdef _Scan s
    cdef _Str content
    if type(payload) is not bytes:
        return _twin().delta_content(payload)
    s.p = <const unsigned char*>PyBytes_AS_STRING(payload)
    s.n = PyBytes_GET_SIZE(payload)
    s.i = 0
    content.present = False
    if _chunk(&s, &content) == _SLOW:
        return _twin().delta_content(payload)
    if not content.present:
        return None
    if content.escaped:
        return _unescape(s.p, content.start, content.end)
    return PyUnicode_DecodeUTF8(<const char*>s.p + content.start, content.end - content.start, NULL)


def extract_code(text):
    """Return the body of the first fenced Python code block in ``text``, or None.

    >>> extract_code("Here:\\n```python\\nx = 1\\n```\\nbye")
    'x = 1\\n'
    >>> extract_code("```bash\\nls\\n```\\n```\\r\\nprint(1)\\r\\n")
    'print(1)\\n'

    CommonMark-style backtick fences: a fence line has at most 3 leading spaces then a run of 3
    or more backticks; an opening fence's info string (the rest of the line, stripped of spaces
    and tabs) must hold no backtick, and the block qualifies when the first word of the info
    string is ``python`` or ``py`` in any case, or the info string is empty. Blocks in another
    language are skipped whole. A closing fence has at least as many backticks as its opening
    and nothing else but spaces and tabs; without one the block runs to the end of ``text``.
    Lines end with LF or CRLF; the body comes back with LF only, every line (the last included)
    ends with ``"\\n"``, up to the opening fence's indentation of spaces is removed from each
    line, and an empty block gives ``""``. Tildes do not make fences.
    """
    if type(text) is not str:
        return _twin().extract_code(text)
    cdef str s = <str>text
    cdef Py_ssize_t n = len(s), pos = 0, start = 0, indent = 0, ticks = 0
    cdef Py_ssize_t q, line_start, line_end, next_line, run
    cdef bint inside = False, wanted = False
    cdef str info
    while True:
        q = PyUnicode_Find(s, "```", pos, n, 1)
        if q < 0:
            break
        line_start = PyUnicode_FindChar(s, "\n", pos, q, -1) + 1
        if line_start == 0:
            line_start = pos
        line_end = PyUnicode_FindChar(s, "\n", q, n, 1)
        if line_end < 0:
            line_end = next_line = n
        else:
            next_line = line_end + 1
        if s[line_end - 1] == "\r":
            line_end -= 1
        pos = next_line
        if q - line_start > 3 or not _spaces(s, line_start, q):
            continue
        run = 3
        while q + run < line_end and s[q + run] == "`":
            run += 1
        info = s[q + run:line_end].strip(" \t")
        if not inside:
            if "`" not in info:
                inside = True
                wanted = _is_python(info)
                indent = q - line_start
                ticks = run
                start = next_line
        elif run >= ticks and not info:
            if wanted:
                return _body(s, start, line_start, indent)
            inside = False
    if inside and wanted:
        return _body(s, start, n, indent)
    return None


cdef bint _spaces(str s, Py_ssize_t start, Py_ssize_t end):
    cdef Py_ssize_t i
    for i in range(start, end):
        if s[i] != " ":
            return False
    return True


cdef bint _is_python(str info):
    cdef list words = info.split(None, 1)
    return not words or (<str>words[0]).lower() in ("python", "py")


cdef str _body(str s, Py_ssize_t start, Py_ssize_t end, Py_ssize_t indent):
    cdef str body = s[start:end]
    cdef list lines
    cdef str line
    cdef Py_ssize_t removed, i
    if not body:
        return ""
    if indent == 0 and "\r" not in body:
        return body if body[len(body) - 1] == "\n" else body + "\n"
    lines = body.split("\n")
    if not lines[len(lines) - 1]:
        lines.pop()
    for i in range(len(lines)):
        line = lines[i]
        if line.endswith("\r"):
            line = line[:len(line) - 1]
        removed = len(line) - len(line.lstrip(" "))
        lines[i] = line[min(removed, indent):] + "\n"
    return "".join(lines)
