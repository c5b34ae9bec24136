/* bnb._hotcall: the library call of the eager 4-bit layers' fast path (bnb_gemm_4bit_plan_run)
   without ctypes. A batch-1 forward on a GPU is bound by its host time (issue 16: the layer
   must reach 90 % of the bare C call), and ctypes' conversion of the five arguments is its
   largest single cost (5.7K instructions); through this module a forward executes 30.9K
   instead of 35.6K (callgrind, bench/results/layer4bit_host.md).

   Everything else in the package goes through ctypes (bnb/_lib.py); this module is optional.
   It is built against the limited C API of Python 3.9 (one file, `_hotcall.abi3.so`, for every
   CPython from 3.9) and does not link libbnb: PlanRun(address) calls the function at an address
   that bnb/_lib.py takes from its ctypes prototype, through the exact prototype of bnb.h. Where
   the module is missing or does not load, _lib.py keeps the ctypes function, which takes the
   same arguments and returns the same status. */
#define Py_LIMITED_API 0x03090000
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "bnb.h"

typedef bnb_status_t (*plan_run_fn)(bnb_gemm4_plan_t, int64_t, const void*, void*, void*);

typedef struct {
  PyObject_HEAD
  plan_run_fn fn;
} PlanRun;

/* An address argument as ctypes' c_void_p takes it from these callers: an int, or None for NULL.
   `where` names the call in the error. */
static int address_arg(PyObject* o, const char* where, const char* name, void** out) {
  if (o == Py_None) {
    *out = NULL;
    return 0;
  }
  if (!PyLong_Check(o)) {
    PyErr_Format(PyExc_TypeError, "%s: %s must be an integer address or None, not %R", where, name,
                 (PyObject*)Py_TYPE(o));
    return -1;
  }
  *out = PyLong_AsVoidPtr(o);
  return *out == NULL && PyErr_Occurred() ? -1 : 0;
}

/* PlanRun(address)(plan, M, A, out, stream) -> the bnb_status_t of the call, as an int. The GIL
   is released around the call, as ctypes releases it. */
static PyObject* plan_run_call(PyObject* self, PyObject* args, PyObject* kwargs) {
  if ((kwargs != NULL && PyDict_Size(kwargs) != 0) || PyTuple_Size(args) != 5) {
    PyErr_SetString(PyExc_TypeError,
                    "bnb_gemm_4bit_plan_run takes 5 positional arguments (plan, M, A, out, stream)");
    return NULL;
  }
  static const char kWhere[] = "bnb_gemm_4bit_plan_run";
  void *plan, *a, *out, *stream;
  if (address_arg(PyTuple_GetItem(args, 0), kWhere, "plan", &plan) ||
      address_arg(PyTuple_GetItem(args, 2), kWhere, "A", &a) ||
      address_arg(PyTuple_GetItem(args, 3), kWhere, "out", &out) ||
      address_arg(PyTuple_GetItem(args, 4), kWhere, "stream", &stream)) {
    return NULL;
  }
  PyObject* m = PyTuple_GetItem(args, 1);
  if (!PyLong_Check(m)) {
    PyErr_Format(PyExc_TypeError, "bnb_gemm_4bit_plan_run: M must be an int, not %R", (PyObject*)Py_TYPE(m));
    return NULL;
  }
  const long long rows = PyLong_AsLongLong(m);
  if (rows == -1 && PyErr_Occurred()) return NULL;
  const plan_run_fn fn = ((PlanRun*)self)->fn;
  bnb_status_t status;
  Py_BEGIN_ALLOW_THREADS
  status = fn((bnb_gemm4_plan_t)plan, (int64_t)rows, a, out, stream);
  Py_END_ALLOW_THREADS
  return PyLong_FromLong((long)status);
}

static PyObject* plan_run_new(PyTypeObject* type, PyObject* args, PyObject* kwargs) {
  PyObject* address;
  static char* keywords[] = {"address", NULL};
  if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O:PlanRun", keywords, &address)) return NULL;
  void* fn;
  if (address_arg(address, "PlanRun", "address", &fn)) return NULL;
  if (fn == NULL) {
    PyErr_SetString(PyExc_ValueError, "PlanRun: address is NULL");
    return NULL;
  }
  allocfunc alloc = (allocfunc)PyType_GetSlot(type, Py_tp_alloc);
  PlanRun* self = (PlanRun*)alloc(type, 0);
  if (self != NULL) self->fn = (plan_run_fn)fn;
  return (PyObject*)self;
}

static void plan_run_dealloc(PyObject* self) {
  PyTypeObject* type = Py_TYPE(self);
  freefunc free_slot = (freefunc)PyType_GetSlot(type, Py_tp_free);
  free_slot(self);
  Py_DECREF(type);  // heap types own a reference from each instance
}

static PyType_Slot plan_run_slots[] = {
    {Py_tp_doc, (void*)"PlanRun(address): calls bnb_gemm_4bit_plan_run at `address` as "
                       "(plan, M, A, out, stream) -> status"},
    {Py_tp_new, (void*)plan_run_new},
    {Py_tp_call, (void*)plan_run_call},
    {Py_tp_dealloc, (void*)plan_run_dealloc},
    {0, NULL},
};

static PyType_Spec plan_run_spec = {"bnb._hotcall.PlanRun", sizeof(PlanRun), 0, Py_TPFLAGS_DEFAULT, plan_run_slots};

static int hotcall_exec(PyObject* module) {
  PyObject* type = PyType_FromSpec(&plan_run_spec);
  if (type == NULL) return -1;
  if (PyModule_AddObject(module, "PlanRun", type) < 0) {
    Py_DECREF(type);
    return -1;
  }
  return 0;
}

static PyModuleDef_Slot hotcall_slots[] = {{Py_mod_exec, (void*)hotcall_exec}, {0, NULL}};

static struct PyModuleDef hotcall_module = {
    PyModuleDef_HEAD_INIT, "bnb._hotcall", "The eager 4-bit layers' library call without ctypes (optional).", 0,
    NULL, hotcall_slots, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__hotcall(void) { return PyModuleDef_Init(&hotcall_module); }
