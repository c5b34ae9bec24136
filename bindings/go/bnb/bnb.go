// Package bnb is the Go interface to libbnb: bitsandbytes-compatible 8-bit blockwise and
// NF4/FP4 4-bit quantization, double-quantized statistics, 4-bit and int8 matmuls (and their
// prepared and one-call forms), 32-bit and 8-bit optimizer steps, paged memory.
//
// It calls libbnb only (never a plugin directly), so BNB_BACKEND=cpu|cuda|hip picks the
// backend as it does from C. Data is passed as host slices; on a GPU backend each call copies
// its arguments to the device and its results back.
//
// Building: cgo needs bnb.h and libbnb. The header is found in the repository's include/ by
// default; point the linker at libbnb with, for a CMake build in BUILD:
//
//	CGO_LDFLAGS="-L$BUILD/lib -Wl,-rpath,$BUILD/lib" go test ./...
//
// For an installed copy, CGO_CFLAGS="$(pkg-config --cflags bnb)" and
// CGO_LDFLAGS="$(pkg-config --libs bnb)" (plus an rpath if it is not on the loader's path).
package bnb

/*
#cgo CFLAGS: -I${SRCDIR}/../../../include
#cgo LDFLAGS: -lbnb
#include "bnb.h"

#include "shims.h"
*/
import "C"

import (
	"fmt"
	"runtime"
	"unsafe"
)

// Status is the library's bnb_status_t. The non-zero values are also errors, so
// errors.Is(err, bnb.StatusInvalidArgument) works on what this package returns.
type Status int32

const (
	StatusSuccess            Status = C.BNB_SUCCESS
	StatusInvalidArgument    Status = C.BNB_ERR_INVALID_ARGUMENT
	StatusNotSupported       Status = C.BNB_ERR_NOT_SUPPORTED
	StatusOutOfMemory        Status = C.BNB_ERR_OUT_OF_MEMORY
	StatusBackendUnavailable Status = C.BNB_ERR_BACKEND_UNAVAILABLE
	StatusDevice             Status = C.BNB_ERR_DEVICE
	StatusInternal           Status = C.BNB_ERR_INTERNAL
)

// String is the library's name for the status (bnb_status_string).
func (s Status) String() string {
	return C.GoString(C.bnb_status_string(C.bnb_status_t(s)))
}

func (s Status) Error() string { return s.String() }

// Error is a failed call: the status and the message naming what was wrong.
type Error struct {
	Status  Status
	Message string
}

func (e *Error) Error() string {
	if e.Message == "" {
		return e.Status.String()
	}
	return e.Status.String() + ": " + e.Message
}

// Is lets errors.Is match an *Error against a Status.
func (e *Error) Is(target error) bool {
	s, ok := target.(Status)
	return ok && s == e.Status
}

// invalid is an argument this package rejects before the library sees it (a slice too short
// for what the call would read or write).
func invalid(format string, args ...any) error {
	return &Error{Status: StatusInvalidArgument, Message: fmt.Sprintf(format, args...)}
}

// call runs one C call and, on failure, reads the message on the same OS thread: the
// library keeps the last error per thread, and a goroutine may otherwise move between the two.
func call(f func() C.bnb_status_t) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	st := f()
	if st == C.BNB_SUCCESS {
		return nil
	}
	return &Error{Status: Status(st), Message: C.GoString(C.bnb_last_error_message())}
}

// VersionNumber is MAJOR*10000 + MINOR*100 + PATCH of the loaded library.
func VersionNumber() int { return int(C.bnb_version_number()) }

// VersionString is the loaded library's version, e.g. "0.1.0".
func VersionString() string { return C.GoString(C.bnb_version_string()) }

// HeaderVersionNumber is BNB_VERSION_NUMBER of the bnb.h this package was built against.
const HeaderVersionNumber = int(C.BNB_VERSION_NUMBER)

// DType is an element type of the C API (bnb_dtype_t).
type DType int32

const (
	F32DType  DType = C.BNB_F32
	F16DType  DType = C.BNB_F16
	BF16DType DType = C.BNB_BF16
	U8DType   DType = C.BNB_U8
	I8DType   DType = C.BNB_I8
	I32DType  DType = C.BNB_I32
)

// Quant4 selects a 4-bit code book.
type Quant4 int32

const (
	FP4 Quant4 = C.BNB_FP4
	NF4 Quant4 = C.BNB_NF4
)

// CodeTable names a built-in code table.
type CodeTable int32

const (
	CodeDynamicSigned   CodeTable = C.BNB_CODE_DYNAMIC_SIGNED
	CodeDynamicUnsigned CodeTable = C.BNB_CODE_DYNAMIC_UNSIGNED
	CodeNF4             CodeTable = C.BNB_CODE_NF4
	CodeFP4             CodeTable = C.BNB_CODE_FP4
)

// Backend is a backend kind (bnb_backend_kind_t); BackendAuto follows $BNB_BACKEND, else the
// best available.
type Backend int32

const (
	BackendAuto Backend = C.BNB_BACKEND_AUTO
	BackendCPU  Backend = C.BNB_BACKEND_CPU
	BackendCUDA Backend = C.BNB_BACKEND_CUDA
	BackendHIP  Backend = C.BNB_BACKEND_HIP
)

func (b Backend) String() string {
	switch b {
	case BackendAuto:
		return "auto"
	case BackendCPU:
		return "cpu"
	case BackendCUDA:
		return "cuda"
	case BackendHIP:
		return "hip"
	}
	return fmt.Sprintf("backend(%d)", int32(b))
}

// BackendInfo describes one backend as the library sees it.
type BackendInfo struct {
	Kind        Backend
	Name        string
	Available   bool
	DeviceCount int
	Detail      string // why it is not available, or what was found
}

// Backends lists every backend the library knows, loaded or not.
func Backends() ([]BackendInfo, error) {
	var count C.int32_t
	if err := call(func() C.bnb_status_t { return C.bnb_backend_count(&count) }); err != nil {
		return nil, err
	}
	infos := make([]BackendInfo, 0, int(count))
	for i := 0; i < int(count); i++ {
		var info C.bnb_backend_info_t
		if err := call(func() C.bnb_status_t { return C.go_bnb_backend_info(C.int32_t(i), &info) }); err != nil {
			return nil, err
		}
		infos = append(infos, BackendInfo{
			Kind:        Backend(info.kind),
			Name:        C.GoString(&info.name[0]),
			Available:   info.available != 0,
			DeviceCount: int(info.device_count),
			Detail:      C.GoString(&info.detail[0]),
		})
	}
	return infos, nil
}

// Op is an operation a backend may run (bnb_op_t).
type Op int32

const (
	OpQuantizeBlockwise   Op = C.BNB_OP_QUANTIZE_BLOCKWISE
	OpDequantizeBlockwise Op = C.BNB_OP_DEQUANTIZE_BLOCKWISE
	OpQuantize4Bit        Op = C.BNB_OP_QUANTIZE_4BIT
	OpDequantize4Bit      Op = C.BNB_OP_DEQUANTIZE_4BIT
	OpCompressAbsmax      Op = C.BNB_OP_COMPRESS_ABSMAX
	OpGemm4Bit            Op = C.BNB_OP_GEMM_4BIT
	OpInt8VectorwiseQuant Op = C.BNB_OP_INT8_VECTORWISE_QUANT
	OpInt8OutlierColumns  Op = C.BNB_OP_INT8_OUTLIER_COLUMNS
	OpInt8Matmul          Op = C.BNB_OP_INT8_MATMUL
	OpInt8MMDequant       Op = C.BNB_OP_INT8_MM_DEQUANT
	OpInt8Linear          Op = C.BNB_OP_INT8_LINEAR
	OpOptimizerUpdate     Op = C.BNB_OP_OPTIMIZER_UPDATE
	OpPagedMemory         Op = C.BNB_OP_PAGED_MEMORY
	OpCheckFinite         Op = C.BNB_OP_CHECK_FINITE
	OpGemm4BitTransposed  Op = C.BNB_OP_GEMM_4BIT_TRANSPOSED
	OpInt8LinearOutliers  Op = C.BNB_OP_INT8_LINEAR_OUTLIERS
)

// BackendCapabilities is what a loaded backend runs and the limits its calls are checked
// against (bnb_backend_capabilities_t). Masks hold bit 1 << value per supported value.
type BackendCapabilities struct {
	Kind               Backend
	Ops                uint64 // Op
	FloatDTypes        uint32 // DType of float data
	QuantTypes         uint32 // Quant4
	Optimizers         uint32 // Optimizer
	DeviceCount        int
	OptimizerStateBits uint64 // 1 << 8 | 1 << 32
	MaxElements        int64
	Blocksize8BitMin   int64 // blockwise 8-bit and nested scales: powers of two in [min, max]
	Blocksize8BitMax   int64
	Blocksize4BitMin   int64 // 4-bit quantization and matmul: powers of two in [min, max]
	Blocksize4BitMax   int64
	Int8MaxK           int64
	OptimizerBlock     int64 // elements per 8-bit optimizer state block
	OptimizerMaxStep   int64
}

// Offers reports whether the backend runs op (the call does not fail with StatusNotSupported
// for want of it).
func (c BackendCapabilities) Offers(op Op) bool { return c.Ops>>uint(op)&1 != 0 }

// GetBackendCapabilities returns the capabilities of backend index (its position in Backends());
// a backend that did not load gives StatusBackendUnavailable with the reason.
func GetBackendCapabilities(index int) (BackendCapabilities, error) {
	var c C.bnb_backend_capabilities_t
	if err := call(func() C.bnb_status_t { return C.go_bnb_backend_capabilities(C.int32_t(index), &c) }); err != nil {
		return BackendCapabilities{}, err
	}
	return BackendCapabilities{
		Kind:               Backend(c.kind),
		Ops:                uint64(c.ops),
		FloatDTypes:        uint32(c.float_dtypes),
		QuantTypes:         uint32(c.quant_types),
		Optimizers:         uint32(c.optimizers),
		DeviceCount:        int(c.device_count),
		OptimizerStateBits: uint64(c.optimizer_state_bits),
		MaxElements:        int64(c.max_elements),
		Blocksize8BitMin:   int64(c.blocksize_8bit_min),
		Blocksize8BitMax:   int64(c.blocksize_8bit_max),
		Blocksize4BitMin:   int64(c.blocksize_4bit_min),
		Blocksize4BitMax:   int64(c.blocksize_4bit_max),
		Int8MaxK:           int64(c.int8_max_k),
		OptimizerBlock:     int64(c.optimizer_block),
		OptimizerMaxStep:   int64(c.optimizer_max_step),
	}, nil
}

// DeclareBuffer declares that the buffer at ptr has bytes bytes (bnb_buffer_declare): a libbnb
// call that receives a pointer inside it then fails, naming the argument, instead of going past
// its end. Declarations belong to the OS thread that makes them: declare, call and forget with
// the goroutine locked to its thread (runtime.LockOSThread). The package's own functions check
// slice lengths already; this protects pointers handed to the C API directly.
func DeclareBuffer(ptr unsafe.Pointer, bytes int) error {
	return call(func() C.bnb_status_t { return C.bnb_buffer_declare(ptr, C.int64_t(bytes)) })
}

// ForgetBuffer forgets the calling OS thread's declaration of the buffer starting at ptr.
func ForgetBuffer(ptr unsafe.Pointer) error {
	return call(func() C.bnb_status_t { return C.bnb_buffer_forget(ptr) })
}

// GetCodeTable returns a built-in table: 256 entries (8-bit maps) or 16 (NF4, FP4).
func GetCodeTable(which CodeTable) ([]float32, error) {
	table := make([]float32, 256)
	var count C.int64_t
	err := call(func() C.bnb_status_t {
		return C.bnb_get_code_table(C.int32_t(which), (*C.float)(unsafe.Pointer(&table[0])), &count)
	})
	if err != nil {
		return nil, err
	}
	if count < 0 || count > 256 {
		return nil, &Error{Status: StatusInternal, Message: fmt.Sprintf("code table size %d", count)}
	}
	return table[:count], nil
}
