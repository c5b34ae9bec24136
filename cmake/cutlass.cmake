# CUTLASS for the Hopper int8 path (BNB_INT8_CUTLASS, CMakeLists.txt). bnb_find_cutlass(<inc>
# <where>) sets <inc> to CUTLASS's include directory, from BNB_CUTLASS_INCLUDE or else the PyPI
# package nvidia-cutlass in the Python 3 that CMake finds (-DPython3_EXECUTABLE=...), or to "" where
# there is none, and <where> to where it looked: AUTO asks it without failing.
# bnb_cutlass_headers() makes the target bnb_cutlass_headers or fails (ON, or AUTO once it found
# them), and bnb_cutlass_sm90(target) makes a target's CUDA sources CUTLASS sm_90a code. Users:
# src/backend_cuda (the plugin's int8_cutlass_sm90.cu) and bench/int8 (bnb_bench_int8_cutlass).
include_guard(GLOBAL)

# The package is located, not imported: its headers are all the build needs, so
# `pip install --no-deps nvidia-cutlass` (without scipy, cuda-python, networkx) is enough.
function(bnb_find_cutlass out where)
  set(inc "${BNB_CUTLASS_INCLUDE}")
  set(looked "BNB_CUTLASS_INCLUDE=${inc}")
  if(NOT inc)
    find_package(Python3 COMPONENTS Interpreter)
    set(looked "nvidia-cutlass in the Python 3 found: '${Python3_EXECUTABLE}'")
    if(Python3_Interpreter_FOUND)
      execute_process(
        COMMAND ${Python3_EXECUTABLE} -c
                "import importlib.util, os; s = importlib.util.find_spec('cutlass_library'); print(os.path.join(s.submodule_search_locations[0], 'source', 'include'))"
        OUTPUT_VARIABLE inc OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE rc ERROR_QUIET)
      if(NOT rc EQUAL 0)
        set(inc "")
      endif()
    endif()
  endif()
  if(NOT inc OR NOT EXISTS "${inc}/cutlass/cutlass.h")
    set(inc "")
  endif()
  set(${out} "${inc}" PARENT_SCOPE)
  set(${where} "${looked}" PARENT_SCOPE)
endfunction()

function(bnb_cutlass_headers)
  bnb_find_cutlass(inc looked)
  if(NOT inc)
    message(FATAL_ERROR "BNB_INT8_CUTLASS=ON: CUTLASS's headers not found (${looked}); "
                        "pass -DBNB_CUTLASS_INCLUDE=<cutlass>/include or pip install nvidia-cutlass "
                        "into the Python 3 CMake finds (-DPython3_EXECUTABLE=...)")
  endif()
  message(STATUS "BNB_INT8_CUTLASS: CUTLASS headers in ${inc}")
  add_library(bnb_cutlass_headers INTERFACE)
  target_include_directories(bnb_cutlass_headers SYSTEM INTERFACE ${inc})
  if(EXISTS "${inc}/../tools/util/include")
    target_include_directories(bnb_cutlass_headers SYSTEM INTERFACE ${inc}/../tools/util/include)
  endif()
endfunction()

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
