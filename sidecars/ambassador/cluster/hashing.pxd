# Declarations for the compiled build of hashing.py (Cython "pure Python mode", see setup.py): typed
# locals turn each hash loop into C arithmetic on unsigned 32-bit ints, where wrapping is native and
# the source's masks cost nothing. Keys must be `bytes` (the proxies pass slices of what they read).

cimport cython

cdef unsigned int _M32, _FNV1A_64_INIT, _FNV_64_PRIME, _FNV_32_INIT, _FNV_32_PRIME
cdef int _STRIDE

@cython.locals(h=cython.uint, b=cython.uchar, n=cython.int)
cpdef unsigned int fnv1a_64(bytes key) except? 0

@cython.locals(h=cython.uint, b=cython.uchar)
cpdef unsigned int fnv1_64(bytes key) except? 0

@cython.locals(h=cython.uint, b=cython.uchar)
cpdef unsigned int fnv1a_32(bytes key) except? 0

@cython.locals(h=cython.uint, b=cython.uchar)
cpdef unsigned int fnv1_32(bytes key) except? 0

@cython.locals(h=cython.uint, b=cython.uchar)
cpdef unsigned int one_at_a_time(bytes key) except? 0

@cython.locals(crc=cython.uint, b=cython.uchar)
cpdef unsigned int crc16(bytes key) except? 0

@cython.locals(n=cython.Py_ssize_t, h=cython.uint, tmp=cython.uint, rem=cython.int, i=cython.Py_ssize_t)
cpdef unsigned int hsieh(bytes key) except? 0

@cython.locals(m=cython.uint, n=cython.Py_ssize_t, h=cython.uint, k=cython.uint, i=cython.Py_ssize_t, rem=cython.Py_ssize_t)
cpdef unsigned int murmur(bytes key) except? 0

@cython.locals(x=cython.uint, k=cython.int)
cdef unsigned int _rot(unsigned int x, int k) noexcept

@cython.locals(n=cython.Py_ssize_t, a=cython.uint, b=cython.uint, c=cython.uint, i=cython.Py_ssize_t)
cpdef unsigned int jenkins(bytes key) except? 0
