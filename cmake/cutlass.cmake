# CUTLASS for the opt-in Hopper int8 path (BNB_INT8_CUTLASS=ON): finds CUTLASS's headers once, from
# BNB_CUTLASS_INCLUDE or else the PyPI package nvidia-cutlass (pip install nvidia-cutlass) in the
# Python 3 that CMake finds (-DPython3_EXECUTABLE=...), and gives bnb_cutlass_sm90(target), which
# makes a target's CUDA sources CUTLASS sm_90a code. Users: src/backend_cuda (the plugin's
# int8_cutlass_sm90.cu) and bench/int8 (bnb_bench_int8_cutlass).
include_guard(GLOBAL)

set(_bnb_cutlass_inc "${BNB_CUTLASS_INCLUDE}")
if(NOT _bnb_cutlass_inc)
  find_package(Python3 COMPONENTS Interpreter)
  if(Python3_Interpreter_FOUND)
    execute_process(
      COMMAND ${Python3_EXECUTABLE} -c
              "import cutlass_library, os; print(os.path.join(os.path.dirname(cutlass_library.__file__), 'source', 'include'))"
      OUTPUT_VARIABLE _bnb_cutlass_inc OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE _bnb_cutlass_rc ERROR_QUIET)
    if(NOT _bnb_cutlass_rc EQUAL 0)
      set(_bnb_cutlass_inc "")
    endif()
  endif()
endif()
if(NOT _bnb_cutlass_inc OR NOT EXISTS "${_bnb_cutlass_inc}/cutlass/cutlass.h")
  message(FATAL_ERROR "BNB_INT8_CUTLASS=ON: CUTLASS's headers not found ('${_bnb_cutlass_inc}'); "
                      "pass -DBNB_CUTLASS_INCLUDE=<cutlass>/include or pip install nvidia-cutlass "
                      "into the Python 3 CMake finds (-DPython3_EXECUTABLE=...)")
endif()
message(STATUS "BNB_INT8_CUTLASS: CUTLASS headers in ${_bnb_cutlass_inc}")

add_library(bnb_cutlass_headers INTERFACE)
target_include_directories(bnb_cutlass_headers SYSTEM INTERFACE ${_bnb_cutlass_inc})
if(EXISTS "${_bnb_cutlass_inc}/../tools/util/include")
  target_include_directories(bnb_cutlass_headers SYSTEM INTERFACE ${_bnb_cutlass_inc}/../tools/util/include)
endif()

# wgmma and TMA need the arch-specific target sm_90a, so such a target is built for it alone. The
# epilogue's roundings are explicit PTX (mul.rn.ftz, fma.rn.ftz); -ftz=true and --fmad=false (the
# plugin's numerics flags) keep any other float code of the TU from being contracted or keeping
# denormals all the same. NDEBUG: no CUTLASS device asserts, whatever the build type.
function(bnb_cutlass_sm90 target)
  set_target_properties(${target} PROPERTIES CUDA_ARCHITECTURES 90a CUDA_STANDARD 17 CUDA_STANDARD_REQUIRED ON)
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CUDA>:--expt-relaxed-constexpr -ftz=true --fmad=false -DNDEBUG
                               -Xcompiler=-Wno-unused-parameter>)
  target_link_libraries(${target} PRIVATE bnb_cutlass_headers)
endfunction()
