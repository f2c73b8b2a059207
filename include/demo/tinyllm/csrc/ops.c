/* tinyllm._ops: the compiled kernels of the stand-in for vLLM. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>

/* rms_norm(x) -> list[float]: x divided by its root mean square. */
static PyObject *rms_norm(PyObject *self, PyObject *arg) {
    PyObject *seq = PySequence_Fast(arg, "rms_norm: x must be a sequence");
    if (!seq) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    double sq = 0.0;
    for (Py_ssize_t i = 0; i < n; i++) {
        double v = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(seq, i));
        if (PyErr_Occurred()) { Py_DECREF(seq); return NULL; }
        sq += v * v;
    }
    double scale = n ? 1.0 / sqrt(sq / (double)n + 1e-6) : 1.0;
    PyObject *out = PyList_New(n);
    if (!out) { Py_DECREF(seq); return NULL; }
    for (Py_ssize_t i = 0; i < n; i++) {
        double v = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(seq, i));
        PyList_SET_ITEM(out, i, PyFloat_FromDouble(v * scale));
    }
    Py_DECREF(seq);
    return out;
}

static PyMethodDef methods[] = {
    {"rms_norm", rms_norm, METH_O, "rms_norm(x) -> list[float]"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "tinyllm._ops", NULL, -1, methods};

PyMODINIT_FUNC PyInit__ops(void) { return PyModule_Create(&module); }
