# Declarations for the compiled build of resp.py (Cython "pure Python mode", see setup.py): positions
# and lengths become C integers and `buf[i]` a C byte read, so scanning a pipeline of commands or
# replies runs in C except for the slices it keeps and the line ends of simple replies (`find`).

cimport cython

cdef int _STAR, _DOLLAR, _PLUS, _MINUS, _COLON
cdef Py_ssize_t MAX_INLINE_BYTES, MAX_HEADER_BYTES, MAX_ARGS

@cython.locals(end=cython.Py_ssize_t, start=cython.Py_ssize_t, nl=cython.Py_ssize_t, count=cython.Py_ssize_t,
               size=cython.Py_ssize_t, data_end=cython.Py_ssize_t, q=cython.Py_ssize_t, c=cython.int)
cpdef tuple _parse(bytes buf, Py_ssize_t pos, list out, Py_ssize_t max_value, Py_ssize_t max_command,
                   Py_ssize_t max_count)

@cython.locals(end=cython.Py_ssize_t, left=cython.Py_ssize_t, p=cython.Py_ssize_t, kind=cython.int,
               nl=cython.Py_ssize_t, size=cython.Py_ssize_t, q=cython.Py_ssize_t, c=cython.int, negative=cython.bint)
cpdef Py_ssize_t reply_end(bytes buf, Py_ssize_t pos) except? -1
