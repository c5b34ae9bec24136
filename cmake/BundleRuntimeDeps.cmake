# Makes the build (and install) tree self-contained: shared libraries that a plugin needs but a
# target machine may lack (Debian ships Highway only as libhwy.so.1; the GPU machines and Python
# wheels don't have it) are copied beside the plugins, which find them through RPATH $ORIGIN.
function(bnb_bundle_shared_dependency plugin library_name soname)
  find_library(_bnb_dep_${library_name} NAMES ${library_name})
  if(NOT _bnb_dep_${library_name})
    return()
  endif()
  get_filename_component(_real "${_bnb_dep_${library_name}}" REALPATH)
  set(_copy "${CMAKE_LIBRARY_OUTPUT_DIRECTORY}/${soname}")
  add_custom_command(OUTPUT "${_copy}"
    COMMAND ${CMAKE_COMMAND} -E copy_if_different "${_real}" "${_copy}"
    DEPENDS "${_real}" VERBATIM)
  add_custom_target(bnb_bundle_${library_name} ALL DEPENDS "${_copy}")
  add_dependencies(${plugin} bnb_bundle_${library_name})
  install(FILES "${_real}" DESTINATION ${BNB_PLUGIN_INSTALL_DIR} RENAME ${soname})
  if(SKBUILD)
    install(FILES "${_real}" DESTINATION bnb RENAME ${soname} COMPONENT python)
  endif()
endfunction()

if(TARGET bnb_backend_cpu)
  set_target_properties(bnb_backend_cpu PROPERTIES BUILD_RPATH "$ORIGIN" INSTALL_RPATH "$ORIGIN")
  bnb_bundle_shared_dependency(bnb_backend_cpu hwy libhwy.so.1)
endif()
