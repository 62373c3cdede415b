# Plugins the engine tests load (tests/engine/test_plugin.cpp): the working sample and one deliberately
# broken library per loader error. Included by tests/CMakeLists.txt before the test executables exist,
# so the wiring into test_engine is a function, called at the end of that file.
add_subdirectory(${CMAKE_CURRENT_LIST_DIR}/sample ${CMAKE_CURRENT_BINARY_DIR}/plugins/sample)

# name → TESSERA_BAD_PLUGIN kind (see bad_plugin.cpp)
set(TESSERA_BAD_PLUGIN_KINDS no_entry=1 abi=2 engine_version=3 torch_version=4 null_info=5 throws=6)
set(TESSERA_TEST_PLUGIN_TARGETS tessera_sample_plugin tessera_duplicate_plugin)
foreach(entry ${TESSERA_BAD_PLUGIN_KINDS})
  string(REPLACE "=" ";" entry ${entry})
  list(GET entry 0 kind)
  list(GET entry 1 number)
  add_library(tessera_bad_${kind}_plugin MODULE ${CMAKE_CURRENT_LIST_DIR}/bad_plugin.cpp)
  target_compile_definitions(tessera_bad_${kind}_plugin PRIVATE TESSERA_BAD_PLUGIN=${number})
  list(APPEND TESSERA_TEST_PLUGIN_TARGETS tessera_bad_${kind}_plugin)
endforeach()
add_library(tessera_duplicate_plugin MODULE ${CMAKE_CURRENT_LIST_DIR}/duplicate_plugin.cpp)

foreach(target ${TESSERA_TEST_PLUGIN_TARGETS})
  if(NOT target STREQUAL tessera_sample_plugin)
    target_link_libraries(${target} PRIVATE tessera::engine)
    tessera_warnings(${target})
  endif()
  set_target_properties(${target} PROPERTIES LIBRARY_OUTPUT_DIRECTORY ${CMAKE_CURRENT_BINARY_DIR}/plugins)
endforeach()

# tessera_wire_test_plugins(TARGET): TARGET builds after the plugins and gets their paths as
# TESSERA_<NAME>_PLUGIN compile definitions (TESSERA_SAMPLE_PLUGIN, TESSERA_BAD_ABI_PLUGIN, …).
function(tessera_wire_test_plugins target)
  if(NOT TARGET ${target})
    return()
  endif()
  foreach(plugin ${TESSERA_TEST_PLUGIN_TARGETS})
    string(REGEX REPLACE "^tessera_" "" macro ${plugin})
    string(TOUPPER "TESSERA_${macro}" macro)
    target_compile_definitions(${target} PRIVATE ${macro}="$<TARGET_FILE:${plugin}>")
  endforeach()
  add_dependencies(${target} ${TESSERA_TEST_PLUGIN_TARGETS})
endfunction()
