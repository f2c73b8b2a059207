/* tinytorch._C: the compiled part of the stand-in for ROCm torch. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#ifndef TINYTORCH_ROCM_VERSION
#define TINYTORCH_ROCM_VERSION ""
#endif
#ifndef TINYTORCH_GPU_ARCHS
#define TINYTORCH_GPU_ARCHS ""
#endif

/* dot(a, b) -> float: the dot product of two equally long sequences of numbers. */
static PyObject *dot(PyObject *self, PyObject *args) {
    PyObject *a, *b;
    if (!PyArg_ParseTuple(args, "OO", &a, &b)) return NULL;
    PyObject *fa = PySequence_Fast(a, "dot: a must be a sequence");
    if (!fa) return NULL;
    PyObject *fb = PySequence_Fast(b, "dot: b must be a sequence");
    if (!fb) { Py_DECREF(fa); return NULL; }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fa);
    if (n != PySequence_Fast_GET_SIZE(fb)) {
        Py_DECREF(fa); Py_DECREF(fb);
        PyErr_SetString(PyExc_ValueError, "dot: sequences differ in length");
        return NULL;
    }
    double sum = 0.0;
    for (Py_ssize_t i = 0; i < n; i++) {
        double x = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(fa, i));
        double y = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(fb, i));
        if (PyErr_Occurred()) { Py_DECREF(fa); Py_DECREF(fb); return NULL; }
        sum += x * y;
    }
    Py_DECREF(fa); Py_DECREF(fb);
    return PyFloat_FromDouble(sum);
}

/* build_info() -> dict: the ROCm version and GPU archs this build was compiled for. */
static PyObject *build_info(PyObject *self, PyObject *unused) {
    return Py_BuildValue("{s:s,s:s}", "rocm_version", TINYTORCH_ROCM_VERSION, "gpu_archs", TINYTORCH_GPU_ARCHS);
}

static PyMethodDef methods[] = {
    {"dot", dot, METH_VARARGS, "dot(a, b) -> float"},
    {"build_info", build_info, METH_NOARGS, "build_info() -> dict"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "tinytorch._C", NULL, -1, methods};

PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&module); }
