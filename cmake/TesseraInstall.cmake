# Install rules and the CMake package: an application does
#   find_package(Tessera REQUIRED)
#   target_link_libraries(app PRIVATE tessera::tessera)   # C++: the engine and every built-in
#   target_link_libraries(app PRIVATE tessera::c)         # C: libtessera.so (also: pkg-config tessera)
include(CMakePackageConfigHelpers)

set(TESSERA_INSTALL_CMAKEDIR ${CMAKE_INSTALL_LIBDIR}/cmake/Tessera)
set(TESSERA_INSTALL_TARGETS tessera_engine)
foreach(t tessera_blocks tessera_schedulers tessera_guiders tessera_models tessera_parity tessera_builtins tessera_c
        tessera_cxx)
  if(TARGET ${t})
    list(APPEND TESSERA_INSTALL_TARGETS ${t})
  endif()
endforeach()

install(TARGETS ${TESSERA_INSTALL_TARGETS} EXPORT TesseraTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR}
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})

# Only the public API is installed: include/tessera/*.h (<tessera/pipeline.h>, <tessera/tessera.h>, …) and the
# generated <tessera/version.h>. The folders' own headers (engine/, models/, blocks/, …) are private.
install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/tessera/ DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/tessera
        FILES_MATCHING PATTERN "*.h")
install(FILES ${PROJECT_BINARY_DIR}/generated/tessera/version.h DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/tessera)
install(FILES ${PROJECT_BINARY_DIR}/tessera.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)

install(EXPORT TesseraTargets NAMESPACE tessera:: DESTINATION ${TESSERA_INSTALL_CMAKEDIR})
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/TesseraConfig.cmake.in
  ${PROJECT_BINARY_DIR}/TesseraConfig.cmake INSTALL_DESTINATION ${TESSERA_INSTALL_CMAKEDIR})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/TesseraConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/TesseraConfig.cmake ${PROJECT_BINARY_DIR}/TesseraConfigVersion.cmake
  DESTINATION ${TESSERA_INSTALL_CMAKEDIR})
# Every shipped recipe (share/tessera/recipes/{demo,sd,sdxl}/…). Their default `model` points into the source
# tree's test fixtures; an installed copy is run with --set model=DIR.
install(DIRECTORY ${PROJECT_SOURCE_DIR}/recipes/ DESTINATION ${CMAKE_INSTALL_DATADIR}/tessera/recipes
        FILES_MATCHING PATTERN "*.yaml")
