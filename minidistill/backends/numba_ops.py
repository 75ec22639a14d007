from .numpy_ops import NumpyOps
class NumbaOps(NumpyOps):
    name = "numba"
