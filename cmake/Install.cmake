# Installation layout for C/C++ consumers (included at the end of the root CMakeLists.txt):
#
#   include/bnb.h
#   <libdir>/libbnb.so -> libbnb.so.0 -> libbnb.so.0.1.0
#   <libdir>/libbnb_backend_{cpu,cuda,hip}.so   beside libbnb (installed by each plugin's own
#                                               CMakeLists): the core finds them via dladdr
#   <libdir>/cmake/bnb/bnbConfig*.cmake, bnbTargets*.cmake    find_package(bnb) -> bnb::bnb
#   <libdir>/pkgconfig/bnb.pc                                 pkg-config --cflags --libs bnb
#   bin/bnb                                                   the command-line tool, if built
#
# Everything is relocatable: `cmake --install BUILD --prefix P` works for any P, and the CMake
# package and the .pc file locate the tree from where they are found.
include(CMakePackageConfigHelpers)

set(BNB_CMAKE_INSTALL_DIR "${CMAKE_INSTALL_LIBDIR}/cmake/bnb" CACHE STRING
    "Where the CMake package files (bnbConfig.cmake) are installed")
set(BNB_PKGCONFIG_INSTALL_DIR "${CMAKE_INSTALL_LIBDIR}/pkgconfig" CACHE STRING
    "Where bnb.pc is installed")

# ---- the core library and its header
get_target_property(_bnb_public_header bnb PUBLIC_HEADER)
install(TARGETS bnb EXPORT bnbTargets
  LIBRARY DESTINATION "${CMAKE_INSTALL_LIBDIR}" COMPONENT runtime NAMELINK_COMPONENT development
  RUNTIME DESTINATION "${CMAKE_INSTALL_BINDIR}" COMPONENT runtime
  ARCHIVE DESTINATION "${CMAKE_INSTALL_LIBDIR}" COMPONENT development
  PUBLIC_HEADER DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}" COMPONENT development
  INCLUDES DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}")
if(NOT _bnb_public_header)
  install(FILES "${PROJECT_SOURCE_DIR}/include/bnb.h"
          DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}" COMPONENT development)
endif()

# ---- backend plugins: each plugin's CMakeLists installs it into BNB_PLUGIN_INSTALL_DIR, which
# must be the lib dir of libbnb because the core looks for plugins beside itself (dladdr).
if(NOT BNB_PLUGIN_INSTALL_DIR STREQUAL CMAKE_INSTALL_LIBDIR)
  message(WARNING "BNB_PLUGIN_INSTALL_DIR (${BNB_PLUGIN_INSTALL_DIR}) differs from CMAKE_INSTALL_LIBDIR "
                  "(${CMAKE_INSTALL_LIBDIR}): libbnb looks for plugins beside itself, so installed "
                  "programs will need BNB_BACKEND_PATH")
endif()

# ---- the command-line tool (its INSTALL_RPATH points at ../<libdir>)
if(TARGET bnb_cli)
  install(TARGETS bnb_cli RUNTIME DESTINATION "${CMAKE_INSTALL_BINDIR}" COMPONENT runtime)
endif()

# ---- find_package(bnb): imported target bnb::bnb
install(EXPORT bnbTargets
  NAMESPACE bnb::
  FILE bnbTargets.cmake
  DESTINATION "${BNB_CMAKE_INSTALL_DIR}"
  COMPONENT development)
configure_package_config_file(
  "${CMAKE_CURRENT_LIST_DIR}/bnbConfig.cmake.in"
  "${CMAKE_CURRENT_BINARY_DIR}/bnbConfig.cmake"
  INSTALL_DESTINATION "${BNB_CMAKE_INSTALL_DIR}")
# The SONAME carries the major version, so any release of the same major is ABI-compatible.
write_basic_package_version_file(
  "${CMAKE_CURRENT_BINARY_DIR}/bnbConfigVersion.cmake"
  VERSION "${PROJECT_VERSION}"
  COMPATIBILITY SameMajorVersion)
install(FILES
  "${CMAKE_CURRENT_BINARY_DIR}/bnbConfig.cmake"
  "${CMAKE_CURRENT_BINARY_DIR}/bnbConfigVersion.cmake"
  DESTINATION "${BNB_CMAKE_INSTALL_DIR}"
  COMPONENT development)

# ---- pkg-config: paths relative to the .pc file's own directory, so the tree can move
function(_bnb_relative_to_pc out dir)
  if(IS_ABSOLUTE "${dir}")
    set(${out} "${dir}" PARENT_SCOPE)
  else()
    set(${out} "\${prefix}/${dir}" PARENT_SCOPE)
  endif()
endfunction()
if(IS_ABSOLUTE "${BNB_PKGCONFIG_INSTALL_DIR}")
  set(BNB_PC_PREFIX "${CMAKE_INSTALL_PREFIX}")
else()
  # From <prefix>/<pcdir> back up to <prefix>: one ".." per path component.
  string(REGEX REPLACE "[^/]+" ".." _bnb_up "${BNB_PKGCONFIG_INSTALL_DIR}")
  string(REGEX REPLACE "/+$" "" _bnb_up "${_bnb_up}")
  set(BNB_PC_PREFIX "\${pcfiledir}/${_bnb_up}")
endif()
_bnb_relative_to_pc(BNB_PC_LIBDIR "${CMAKE_INSTALL_LIBDIR}")
_bnb_relative_to_pc(BNB_PC_INCLUDEDIR "${CMAKE_INSTALL_INCLUDEDIR}")
configure_file("${CMAKE_CURRENT_LIST_DIR}/bnb.pc.in" "${CMAKE_CURRENT_BINARY_DIR}/bnb.pc" @ONLY)
install(FILES "${CMAKE_CURRENT_BINARY_DIR}/bnb.pc"
  DESTINATION "${BNB_PKGCONFIG_INSTALL_DIR}"
  COMPONENT development)
