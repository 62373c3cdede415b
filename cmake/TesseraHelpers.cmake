# tessera_torch_pch(target): the target's translation units start from one precompiled LibTorch header shared by the
# whole build. A GCC PCH of <ATen/ATen.h> costs about 30 s of one core to build, and two dozen targets each built their
# own; now one is built for libraries (-fPIC) and one for executables (-fPIE), since GCC refuses a PCH built with the
# other setting and silently parses the headers instead. A target with its own extra headers (tessera_models adds
# <torch/torch.h>) calls target_precompile_headers itself instead.
function(tessera_torch_pch target)
  if(NOT TESSERA_USE_PCH)
    return()
  endif()
  get_target_property(type ${target} TYPE)
  if(type STREQUAL "EXECUTABLE")
    set(host tessera_pch_executables)
  else()
    set(host tessera_pch_libraries)
  endif()
  if(NOT TARGET ${host})
    add_library(${host} OBJECT ${PROJECT_SOURCE_DIR}/cmake/pch_host.cpp)
    target_link_libraries(${host} PRIVATE ${TORCH_LIBRARIES})
    target_precompile_headers(${host} PRIVATE <ATen/ATen.h> <vector> <string> <map> <memory>)
    if(type STREQUAL "EXECUTABLE")
      set_target_properties(${host} PROPERTIES POSITION_INDEPENDENT_CODE OFF)
      target_compile_options(${host} PRIVATE -fPIE)
    endif()
  endif()
  target_precompile_headers(${target} REUSE_FROM ${host})
endfunction()

function(tessera_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wno-unused-parameter)
endfunction()
