"""Loading libbnb with ctypes: the library, its prototypes, errors and cached contexts.

Every C function of include/bnb.h gets argtypes and restype here (PROTOTYPES); nothing else in
the package calls into the library by another route but one: `plan_run_caller` gives the eager
4-bit layers' hot call (bnb_gemm_4bit_plan_run) to the optional compiled bnb._hotcall, which calls
the address of that ctypes prototype without ctypes' argument conversion. Array arguments are declared c_void_p
and passed as integers (a data pointer), which keeps each call cheap.
"""

import ctypes
import glob
import os
import threading

EXPECTED_MAJOR = 0  # BNB_VERSION_MAJOR this binding was written against

# ---------------------------------------------------------------- enums (bnb.h)
SUCCESS, ERR_INVALID_ARGUMENT, ERR_NOT_SUPPORTED, ERR_OUT_OF_MEMORY = 0, 1, 2, 3
ERR_BACKEND_UNAVAILABLE, ERR_DEVICE, ERR_INTERNAL = 4, 5, 6

F32, F16, BF16, U8, I8, I32 = 0, 1, 2, 3, 4, 5
DTYPE_NAMES = {F32: "float32", F16: "float16", BF16: "bfloat16", U8: "uint8", I8: "int8", I32: "int32"}
DTYPE_CODES = {name: code for code, name in DTYPE_NAMES.items()}

FP4, NF4 = 1, 2
QUANT_TYPES = {"fp4": FP4, "nf4": NF4}

CODE_DYNAMIC_SIGNED, CODE_DYNAMIC_UNSIGNED, CODE_NF4, CODE_FP4 = 0, 1, 2, 3
CODE_TABLES = {
    "dynamic_signed": CODE_DYNAMIC_SIGNED,
    "dynamic": CODE_DYNAMIC_SIGNED,
    "dynamic_unsigned": CODE_DYNAMIC_UNSIGNED,
    "nf4": CODE_NF4,
    "fp4": CODE_FP4,
}

BACKEND_AUTO, BACKEND_CPU, BACKEND_CUDA, BACKEND_HIP = 0, 1, 2, 3
BACKEND_NAMES = {BACKEND_AUTO: "auto", BACKEND_CPU: "cpu", BACKEND_CUDA: "cuda", BACKEND_HIP: "hip"}

# bnb_op_t, by value
OP_NAMES = ("quantize_blockwise", "dequantize_blockwise", "quantize_4bit", "dequantize_4bit", "compress_absmax",
            "gemm_4bit", "int8_vectorwise_quant", "int8_outlier_columns", "int8_matmul", "int8_mm_dequant",
            "int8_linear", "optimizer_update", "paged_memory", "check_finite", "gemm_4bit_transposed",
            "int8_linear_outliers")

MEMCPY_HOST_TO_HOST, MEMCPY_HOST_TO_BACKEND, MEMCPY_BACKEND_TO_HOST, MEMCPY_BACKEND_TO_BACKEND = 0, 1, 2, 3


# ---------------------------------------------------------------- structs (bnb.h)
class BackendInfo(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("kind", ctypes.c_int32),
        ("name", ctypes.c_char * 32),
        ("available", ctypes.c_int32),
        ("device_count", ctypes.c_int32),
        ("detail", ctypes.c_char * 256),
    ]


class BackendCapabilities(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("kind", ctypes.c_int32),
        ("ops", ctypes.c_uint64),
        ("float_dtypes", ctypes.c_uint32),
        ("quant_types", ctypes.c_uint32),
        ("optimizers", ctypes.c_uint32),
        ("device_count", ctypes.c_int32),
        ("optimizer_state_bits", ctypes.c_uint64),
        ("max_elements", ctypes.c_int64),
        ("blocksize_8bit_min", ctypes.c_int64),
        ("blocksize_8bit_max", ctypes.c_int64),
        ("blocksize_4bit_min", ctypes.c_int64),
        ("blocksize_4bit_max", ctypes.c_int64),
        ("int8_max_k", ctypes.c_int64),
        ("optimizer_block", ctypes.c_int64),
        ("optimizer_max_step", ctypes.c_int64),
    ]


class ContextOptions(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("backend", ctypes.c_int32),
        ("device", ctypes.c_int32),
        ("num_threads", ctypes.c_int32),
        ("check_finite", ctypes.c_int32),  # 0 = $BNB_CHECK_FINITE; a libbnb before it reads 16 bytes
    ]


class Scales(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("absmax", ctypes.c_void_p),
        ("absmax_q", ctypes.c_void_p),
        ("absmax2", ctypes.c_void_p),
        ("code2", ctypes.c_void_p),
        ("offset", ctypes.c_void_p),
        ("blocksize2", ctypes.c_int64),
    ]


class OptimizerParams(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("optimizer", ctypes.c_int32),
        ("state_bits", ctypes.c_int32),
        ("param_dtype", ctypes.c_int32),
        ("n", ctypes.c_int64),
        ("lr", ctypes.c_float),
        ("beta1", ctypes.c_float),
        ("beta2", ctypes.c_float),
        ("beta3", ctypes.c_float),
        ("alpha", ctypes.c_float),
        ("eps", ctypes.c_float),
        ("weight_decay", ctypes.c_float),
        ("gnorm_scale", ctypes.c_float),
        ("max_unorm", ctypes.c_float),
        ("param_norm", ctypes.c_float),
        ("step", ctypes.c_int64),
        ("skip_zeros", ctypes.c_int32),
    ]


class OptimizerTensors(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("p", ctypes.c_void_p),
        ("g", ctypes.c_void_p),
        ("state1", ctypes.c_void_p),
        ("state2", ctypes.c_void_p),
        ("absmax1", ctypes.c_void_p),
        ("absmax2", ctypes.c_void_p),
        ("qmap1", ctypes.c_void_p),
        ("qmap2", ctypes.c_void_p),
        ("unorm_vec", ctypes.c_void_p),
    ]


# ---------------------------------------------------------------- prototypes: every function of bnb.h
_i32, _i64, _f32, _ptr = ctypes.c_int32, ctypes.c_int64, ctypes.c_float, ctypes.c_void_p
_st = ctypes.c_int32  # bnb_status_t (a 32-bit enum)
_P = ctypes.POINTER

PROTOTYPES = {
    # name: (restype, argtypes)
    "bnb_version_number": (_i32, []),
    "bnb_version_string": (ctypes.c_char_p, []),
    "bnb_status_string": (ctypes.c_char_p, [_st]),
    "bnb_last_error_message": (ctypes.c_char_p, []),
    "bnb_backend_count": (_st, [_P(_i32)]),
    "bnb_backend_get_info": (_st, [_i32, _P(BackendInfo)]),
    "bnb_backend_get_capabilities": (_st, [_i32, _P(BackendCapabilities)]),
    "bnb_context_options_init": (_st, [_P(ContextOptions)]),
    "bnb_context_create": (_st, [_P(ContextOptions), _P(_ptr)]),
    "bnb_context_destroy": (_st, [_ptr]),
    "bnb_context_get_backend": (_st, [_ptr, _P(_i32), _P(_i32)]),
    "bnb_get_code_table": (_st, [_i32, _ptr, _P(_i64)]),
    # ctx, dtype, A, n, blocksize, code, out, absmax, stream
    "bnb_quantize_blockwise": (_st, [_ptr, _i32, _ptr, _i64, _i64, _ptr, _ptr, _ptr, _ptr]),
    # ctx, q, absmax, code, n, blocksize, out_dtype, out, stream
    "bnb_dequantize_blockwise": (_st, [_ptr, _ptr, _ptr, _ptr, _i64, _i64, _i32, _ptr, _ptr]),
    "bnb_scales_init": (_st, [_P(Scales)]),
    # ctx, quant_type, dtype, A, n, blocksize, packed, absmax, stream
    "bnb_quantize_4bit": (_st, [_ptr, _i32, _i32, _ptr, _i64, _i64, _ptr, _ptr, _ptr]),
    # ctx, quant_type, packed, scales, n, blocksize, out_dtype, out, stream
    "bnb_dequantize_4bit": (_st, [_ptr, _i32, _ptr, _P(Scales), _i64, _i64, _i32, _ptr, _ptr]),
    # ctx, absmax, nblocks, absmax_q, absmax2, offset, stream
    "bnb_compress_absmax": (_st, [_ptr, _ptr, _i64, _ptr, _ptr, _ptr, _ptr]),
    # ctx, dtype, M, N, K, A, W, scales, quant_type, blocksize, bias, out, stream
    "bnb_gemm_4bit": (_st, [_ptr, _i32, _i64, _i64, _i64, _ptr, _ptr, _P(Scales), _i32, _i64, _ptr, _ptr,
                            _ptr]),
    # ctx, dtype, rows, cols, A, threshold, q, row_stats, stream
    "bnb_gemm_4bit_transposed": (_st, [_ptr, _i32, _i64, _i64, _i64, _ptr, _ptr, _P(Scales), _i32, _i64, _ptr, _ptr]),
    "bnb_gemm_4bit_plan_create": (_st, [_ptr, _i32, _i64, _i64, _ptr, _P(Scales), _i32, _i64, _ptr, _P(_ptr)]),
    "bnb_gemm_4bit_plan_run": (_st, [_ptr, _i64, _ptr, _ptr, _ptr]),
    "bnb_gemm_4bit_plan_destroy": (_st, [_ptr]),
    "bnb_int8_vectorwise_quant": (_st, [_ptr, _i32, _i64, _i64, _ptr, _f32, _ptr, _ptr, _ptr]),
    # ctx, dtype, rows, cols, A, threshold, columns, capacity, count, stream
    "bnb_int8_outlier_columns": (_st, [_ptr, _i32, _i64, _i64, _ptr, _f32, _ptr, _i64, _P(_i64), _ptr]),
    # ctx, M, N, K, A, B, C, stream
    "bnb_int8_matmul": (_st, [_ptr, _i64, _i64, _i64, _ptr, _ptr, _ptr, _ptr]),
    # ctx, M, N, C, row_stats, col_stats, bias, out_dtype, out, stream
    "bnb_int8_mm_dequant": (_st, [_ptr, _i64, _i64, _ptr, _ptr, _ptr, _ptr, _i32, _ptr, _ptr]),
    # ctx, dtype, M, N, K, A, threshold, W, SCB, bias, q, row_stats, C, out, stream
    "bnb_int8_linear": (_st, [_ptr, _i32, _i64, _i64, _i64, _ptr, _f32, _ptr, _ptr, _ptr, _ptr, _ptr, _ptr, _ptr,
                              _ptr]),
    # ctx, dtype, M, N, K, A, threshold, W, SCB, bias, q, row_stats, C, columns, count, out, stream
    "bnb_int8_linear_outliers": (_st, [_ptr, _i32, _i64, _i64, _i64, _ptr, _f32, _ptr, _ptr, _ptr, _ptr, _ptr, _ptr,
                                       _ptr, _ptr, _ptr, _ptr]),
    "bnb_optimizer_params_init": (_st, [_P(OptimizerParams)]),
    "bnb_optimizer_tensors_init": (_st, [_P(OptimizerTensors)]),
    "bnb_optimizer_update": (_st, [_ptr, _P(OptimizerParams), _P(OptimizerTensors), _ptr]),
    "bnb_optimizer_update_multi": (_st, [_ptr, _P(OptimizerParams), _i32, _P(OptimizerTensors), _P(_i64), _ptr]),
    "bnb_paged_alloc": (_st, [_ptr, _i64, _P(_ptr)]),
    "bnb_paged_free": (_st, [_ptr, _ptr]),
    "bnb_paged_prefetch": (_st, [_ptr, _ptr, _i64, _i32, _ptr]),
    "bnb_malloc": (_st, [_ptr, _i64, _P(_ptr)]),
    "bnb_free": (_st, [_ptr, _ptr]),
    "bnb_memcpy": (_st, [_ptr, _ptr, _ptr, _i64, _i32, _ptr]),
    "bnb_synchronize": (_st, [_ptr, _ptr]),
    "bnb_buffer_declare": (_st, [_ptr, _i64]),
    "bnb_buffer_forget": (_st, [_ptr]),
}


# ---------------------------------------------------------------- errors
class Error(Exception):
    """A failed bnb call. `status` is the bnb_status_t; the message is bnb_last_error_message()."""

    status = ERR_INTERNAL

    def __init__(self, message, status=None):
        super().__init__(message)
        if status is not None:
            self.status = status


class InvalidArgumentError(Error, ValueError):
    status = ERR_INVALID_ARGUMENT


class NotSupportedError(Error, NotImplementedError):
    status = ERR_NOT_SUPPORTED


class OutOfMemoryError(Error, MemoryError):
    status = ERR_OUT_OF_MEMORY


class BackendError(Error, RuntimeError):
    """BNB_ERR_BACKEND_UNAVAILABLE, BNB_ERR_DEVICE, BNB_ERR_INTERNAL (and any unknown status)."""


_ERROR_CLASSES = {
    ERR_INVALID_ARGUMENT: InvalidArgumentError,
    ERR_NOT_SUPPORTED: NotSupportedError,
    ERR_OUT_OF_MEMORY: OutOfMemoryError,
}


# ---------------------------------------------------------------- finding and loading the library
def _candidates_in(directory):
    """libbnb files of a directory, best first: the SONAME, the plain name, then any version."""
    names = [f"libbnb.so.{EXPECTED_MAJOR}", "libbnb.so", "libbnb.dylib", "bnb.dll"]
    found = [os.path.join(directory, n) for n in names if os.path.isfile(os.path.join(directory, n))]
    found += sorted(glob.glob(os.path.join(directory, "libbnb.so.*")))
    return found


def find_library():
    """Path of libbnb: $BNB_LIBRARY_PATH (a file or a directory), else this package's directory."""
    override = os.environ.get("BNB_LIBRARY_PATH")
    if override:
        if os.path.isfile(override):
            return override
        if os.path.isdir(override):
            found = _candidates_in(override)
            if found:
                return found[0]
            raise ImportError(f"BNB_LIBRARY_PATH={override!r}: no libbnb.so.{EXPECTED_MAJOR} or libbnb.so there")
        raise ImportError(f"BNB_LIBRARY_PATH={override!r} is neither a file nor a directory")
    here = os.path.dirname(os.path.abspath(__file__))
    found = _candidates_in(here)
    if found:
        return found[0]
    raise ImportError(
        f"libbnb.so.{EXPECTED_MAJOR} is not in the package directory {here}: install the package with "
        "`pip install .` from the repository root, or point BNB_LIBRARY_PATH at a build's lib directory")


def _load(path):
    try:
        lib = ctypes.CDLL(path)
    except OSError as e:
        raise ImportError(f"cannot load libbnb from {path}: {e}") from e
    missing = []
    for name, (restype, argtypes) in PROTOTYPES.items():
        fn = getattr(lib, name, None)
        if fn is None:
            missing.append(name)
            continue
        fn.restype = restype
        fn.argtypes = argtypes
    if "bnb_version_number" in missing:
        raise ImportError(f"{path} is not libbnb (no bnb_version_number)")
    number = lib.bnb_version_number()
    if number // 10000 != EXPECTED_MAJOR:
        raise ImportError(
            f"{path} is libbnb {number // 10000}.{number // 100 % 100}.{number % 100}; this binding needs "
            f"major version {EXPECTED_MAJOR}")
    if missing:
        raise ImportError(f"{path} lacks the functions {', '.join(missing)}")
    return lib


LIBRARY_PATH = os.path.abspath(find_library())
lib = _load(LIBRARY_PATH)


def _load_hotcall():
    """bnb._hotcall (bnb/_hotcall.c), the compiled caller of the eager 4-bit layers' library call,
    from libbnb's directory (a build's lib/ or the installed package), or None where it is not
    there (built without Python's headers), does not load in this interpreter, or BNB_HOTCALL=0
    turns it off. Without it that call goes through ctypes: same arguments, same status."""
    if os.environ.get("BNB_HOTCALL", "1") == "0":
        return None
    found = sorted(glob.glob(os.path.join(os.path.dirname(LIBRARY_PATH), "_hotcall*.so")))
    if not found:
        return None
    import importlib.machinery
    import importlib.util

    try:
        loader = importlib.machinery.ExtensionFileLoader("bnb._hotcall", found[0])
        spec = importlib.util.spec_from_file_location("bnb._hotcall", found[0], loader=loader)
        module = importlib.util.module_from_spec(spec)
        loader.exec_module(module)
    except ImportError:  # e.g. an interpreter older than the module's limited API, or not CPython
        return None
    return module


hotcall = _load_hotcall()


def plan_run_caller(fn):
    """The fastest caller of `fn`, a ctypes function with bnb_gemm_4bit_plan_run's prototype:
    bnb._hotcall's where it loaded, else `fn` itself. Both take (plan, M, A, out, stream) as
    integers (None for NULL) and return the status."""
    if hotcall is None:
        return fn
    return hotcall.PlanRun(ctypes.cast(fn, ctypes.c_void_p).value)


def last_error_message():
    return (lib.bnb_last_error_message() or b"").decode("utf-8", "replace")


def status_string(status):
    return (lib.bnb_status_string(status) or b"").decode("utf-8", "replace")


def raise_for(status, function):
    """Raises the exception that matches a failed call's status, with the library's message."""
    message = last_error_message() or status_string(status)
    cls = _ERROR_CLASSES.get(status, BackendError)
    raise cls(f"{function}: {message}", status)


def check(status, function):
    if status:
        raise_for(status, function)


# ---------------------------------------------------------------- contexts, cached per (backend, device)
_contexts = {}
_contexts_lock = threading.Lock()


_ARRAYS_OF_BACKEND = {
    BACKEND_CPU: "host arrays (numpy arrays, CPU tensors)",
    BACKEND_CUDA: "CUDA tensors",
    BACKEND_HIP: "ROCm tensors",
}


def _environment_backend():
    """The backend kind $BNB_BACKEND names, or None when it is unset, empty or auto. A value this
    binding does not know is left to the library: a context created with BNB_BACKEND_AUTO reads
    the variable, and the library's error (naming BNB_BACKEND and the values it takes) is raised."""
    text = os.environ.get("BNB_BACKEND", "")
    if text in ("", BACKEND_NAMES[BACKEND_AUTO]):
        return None
    for kind, name in BACKEND_NAMES.items():
        if text == name:
            return kind
    options = ContextOptions()
    check(lib.bnb_context_options_init(ctypes.byref(options)), "bnb_context_options_init")
    handle = ctypes.c_void_p()
    check(lib.bnb_context_create(ctypes.byref(options), ctypes.byref(handle)), "bnb_context_create")
    kind, device = ctypes.c_int32(), ctypes.c_int32()
    status = lib.bnb_context_get_backend(handle, ctypes.byref(kind), ctypes.byref(device))
    lib.bnb_context_destroy(handle)
    check(status, "bnb_context_get_backend")
    return kind.value


def check_environment_backend(backend):
    """The binding picks the backend from where the arrays are (host, or a GPU); an explicit
    $BNB_BACKEND must name that backend. Anything else is an error, never a silent override."""
    wanted = _environment_backend()
    if wanted is None or wanted == backend:
        return
    values = ", ".join(BACKEND_NAMES.values())
    raise BackendError(
        f"BNB_BACKEND={os.environ.get('BNB_BACKEND')} selects the {BACKEND_NAMES.get(wanted, wanted)} backend, "
        f"which cannot run {_ARRAYS_OF_BACKEND.get(backend, 'these arrays')}: those need the "
        f"{BACKEND_NAMES.get(backend, backend)} backend. Set BNB_BACKEND to {BACKEND_NAMES.get(backend, backend)} "
        f"or auto, or unset it (BNB_BACKEND takes {values})", ERR_BACKEND_UNAVAILABLE)


def context(backend=BACKEND_CPU, device=0):
    """The library context of a backend and device, created on first use and kept for the process.
    $BNB_BACKEND, when it names a backend, must name this one (check_environment_backend)."""
    key = (backend, device)
    ctx = _contexts.get(key)
    if ctx is not None:
        return ctx
    with _contexts_lock:
        ctx = _contexts.get(key)
        if ctx is None:
            check_environment_backend(backend)
            options = ContextOptions()
            check(lib.bnb_context_options_init(ctypes.byref(options)), "bnb_context_options_init")
            options.backend = backend
            options.device = device
            handle = ctypes.c_void_p()
            check(lib.bnb_context_create(ctypes.byref(options), ctypes.byref(handle)), "bnb_context_create")
            ctx = handle.value
            _contexts[key] = ctx
    return ctx


def version():
    return lib.bnb_version_string().decode()


def backend_infos():
    """One dict per backend the library knows about (loaded or not)."""
    count = ctypes.c_int32()
    check(lib.bnb_backend_count(ctypes.byref(count)), "bnb_backend_count")
    infos = []
    for i in range(count.value):
        info = BackendInfo()
        info.struct_size = ctypes.sizeof(BackendInfo)
        check(lib.bnb_backend_get_info(i, ctypes.byref(info)), "bnb_backend_get_info")
        infos.append({
            "name": info.name.decode("utf-8", "replace"),
            "kind": info.kind,
            "available": bool(info.available),
            "device_count": info.device_count,
            "detail": info.detail.decode("utf-8", "replace"),
        })
    return infos


def _bits(mask, names):
    return tuple(name for value, name in sorted(names.items()) if mask >> value & 1)


def backend_capabilities(backend):
    """bnb_backend_get_capabilities of a backend given by name ("cpu", "cuda", "hip") or index, as a
    dict: ops (names of OP_NAMES), float_dtypes, quant_types, optimizers (names), optimizer_state_bits,
    device_count and the limits. Raises BackendError when the backend did not load."""
    from .optim._traits import TRAITS

    index = backend
    if isinstance(backend, str):
        names = [info["name"] for info in backend_infos()]
        if backend not in names:
            raise ValueError(f"unknown backend {backend!r}: one of {names}")
        index = names.index(backend)
    caps = BackendCapabilities()
    caps.struct_size = ctypes.sizeof(BackendCapabilities)
    check(lib.bnb_backend_get_capabilities(index, ctypes.byref(caps)), "bnb_backend_get_capabilities")
    out = {
        "name": BACKEND_NAMES.get(caps.kind, str(caps.kind)),
        "kind": caps.kind,
        "device_count": caps.device_count,
        "ops": _bits(caps.ops, dict(enumerate(OP_NAMES))),
        "float_dtypes": _bits(caps.float_dtypes, DTYPE_NAMES),
        "quant_types": _bits(caps.quant_types, {code: name for name, code in QUANT_TYPES.items()}),
        "optimizers": _bits(caps.optimizers, {k: t.name for k, t in TRAITS.items()}),
        "optimizer_state_bits": _bits(caps.optimizer_state_bits, {8: 8, 32: 32}),
    }
    for field in ("max_elements", "blocksize_8bit_min", "blocksize_8bit_max", "blocksize_4bit_min",
                  "blocksize_4bit_max", "int8_max_k", "optimizer_block", "optimizer_max_step"):
        out[field] = getattr(caps, field)
    return out


_scales_template = None


def new_scales():
    """A bnb_scales_t as bnb_scales_init fills it (initialised once, then copied: cheaper)."""
    global _scales_template
    if _scales_template is None:
        scales = Scales()
        check(lib.bnb_scales_init(ctypes.byref(scales)), "bnb_scales_init")
        _scales_template = bytes(scales)
    return Scales.from_buffer_copy(_scales_template)
