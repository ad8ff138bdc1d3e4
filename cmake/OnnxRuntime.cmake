# ONNX Runtime as one imported target, onnxruntime::onnxruntime.
# Looks in ONNXRUNTIME_ROOT (CMake or environment variable; an official release with include/ and
# lib/), else in the project-local prefix that scripts/setup.sh fills.
set(ONNXRUNTIME_ROOT "$ENV{ONNXRUNTIME_ROOT}" CACHE PATH "ONNX Runtime install prefix")
if(NOT ONNXRUNTIME_ROOT)
  set(ONNXRUNTIME_ROOT "${CMAKE_SOURCE_DIR}/.deps/onnxruntime" CACHE PATH "" FORCE)
endif()

if(MINGW)
  # MinGW: the DLLs of the npm package (scripts/setup.sh puts them in .deps/onnxruntime-win/bin)
  # with the same headers. MinGW's linker links against a DLL directly; no import library needed.
  set(ONNXRUNTIME_WIN_DIR "${CMAKE_SOURCE_DIR}/.deps/onnxruntime-win" CACHE PATH "ONNX Runtime DLLs for Windows")
  find_path(ONNXRUNTIME_INCLUDE_DIR onnxruntime_cxx_api.h
    PATHS ${ONNXRUNTIME_ROOT}/include ${ONNXRUNTIME_ROOT}/include/onnxruntime NO_DEFAULT_PATH
    NO_CMAKE_FIND_ROOT_PATH)
  set(ONNXRUNTIME_DLL "${ONNXRUNTIME_WIN_DIR}/bin/onnxruntime.dll")
  if(NOT ONNXRUNTIME_INCLUDE_DIR OR NOT EXISTS "${ONNXRUNTIME_DLL}")
    message(FATAL_ERROR "ONNX Runtime for Windows not found (${ONNXRUNTIME_DLL}): run scripts/setup.sh")
  endif()
  add_library(onnxruntime::onnxruntime SHARED IMPORTED GLOBAL)
  set_target_properties(onnxruntime::onnxruntime PROPERTIES
    IMPORTED_LOCATION ${ONNXRUNTIME_DLL}
    IMPORTED_IMPLIB ${ONNXRUNTIME_DLL}
    INTERFACE_INCLUDE_DIRECTORIES ${ONNXRUNTIME_INCLUDE_DIR}
    # ORT's headers use MSVC's SAL annotations and calling-convention spelling on Windows.
    INTERFACE_COMPILE_OPTIONS "SHELL:-include ${CMAKE_CURRENT_LIST_DIR}/ort_mingw_compat.h")
  return()
endif()

find_path(ONNXRUNTIME_INCLUDE_DIR onnxruntime_cxx_api.h
  PATHS ${ONNXRUNTIME_ROOT}/include ${ONNXRUNTIME_ROOT}/include/onnxruntime NO_DEFAULT_PATH)
find_library(ONNXRUNTIME_LIBRARY NAMES onnxruntime libonnxruntime.so.1
  PATHS ${ONNXRUNTIME_ROOT}/lib ${ONNXRUNTIME_ROOT}/lib64 NO_DEFAULT_PATH)
if(NOT ONNXRUNTIME_INCLUDE_DIR OR NOT ONNXRUNTIME_LIBRARY)
  message(FATAL_ERROR "ONNX Runtime not found in ${ONNXRUNTIME_ROOT}: run scripts/setup.sh, or set "
                      "ONNXRUNTIME_ROOT to a release that has include/ and lib/")
endif()
message(STATUS "ONNX Runtime: ${ONNXRUNTIME_LIBRARY}")

add_library(onnxruntime::onnxruntime SHARED IMPORTED GLOBAL)
set_target_properties(onnxruntime::onnxruntime PROPERTIES
  IMPORTED_LOCATION ${ONNXRUNTIME_LIBRARY}
  INTERFACE_INCLUDE_DIRECTORIES ${ONNXRUNTIME_INCLUDE_DIR})
get_filename_component(ONNXRUNTIME_LIBRARY_DIR ${ONNXRUNTIME_LIBRARY} DIRECTORY)
# Executables find the runtime (and provider libraries beside it) without LD_LIBRARY_PATH.
set(CMAKE_BUILD_RPATH ${ONNXRUNTIME_LIBRARY_DIR})
set(CMAKE_INSTALL_RPATH ${ONNXRUNTIME_LIBRARY_DIR})
