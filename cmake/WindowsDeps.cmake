# Libraries of the Windows build (MinGW-w64 cross-compile). Debian ships no Windows builds of the
# C++ libraries lipsync uses, so:
#  - fmt, spdlog, CLI11, nlohmann-json and stb are header-only: Debian's own headers, staged in a
#    folder of their own so that no other Linux header is on the Windows include path;
#  - protobuf-lite is built from the source of Debian's protobuf (scripts/setup.sh fetches it) and
#    the ONNX messages are generated with Debian's protoc (the same version) from Debian's onnx.proto;
#  - GoogleTest from Debian's source package (/usr/src/googletest), in tests/CMakeLists.txt.
# OpenCV, FFTW and FFmpeg are not built: the engine's image code has portable paths, and the
# audio features, avatars and rendering stay Linux-only.
set(LIPSYNC_HOST_HEADERS ${CMAKE_BINARY_DIR}/host-headers)
file(MAKE_DIRECTORY ${LIPSYNC_HOST_HEADERS})
foreach(dir fmt spdlog CLI nlohmann stb)
  if(NOT EXISTS /usr/include/${dir})
    message(FATAL_ERROR "/usr/include/${dir} not found: run scripts/setup.sh")
  endif()
  file(CREATE_LINK /usr/include/${dir} ${LIPSYNC_HOST_HEADERS}/${dir} SYMBOLIC)
endforeach()
add_library(lipsync_host_headers INTERFACE)
target_include_directories(lipsync_host_headers SYSTEM INTERFACE ${LIPSYNC_HOST_HEADERS})
add_library(fmt::fmt ALIAS lipsync_host_headers)
target_compile_definitions(lipsync_host_headers INTERFACE FMT_HEADER_ONLY)
add_library(spdlog::spdlog ALIAS lipsync_host_headers)
add_library(CLI11::CLI11 ALIAS lipsync_host_headers)
add_library(nlohmann_json::nlohmann_json ALIAS lipsync_host_headers)
add_library(stb::stb ALIAS lipsync_host_headers)

# protobuf-lite, static, from source.
set(LIPSYNC_PROTOBUF_SRC "${PROJECT_SOURCE_DIR}/.deps/protobuf-src" CACHE PATH "protobuf source")
if(NOT EXISTS ${LIPSYNC_PROTOBUF_SRC}/CMakeLists.txt)
  message(FATAL_ERROR "protobuf source not found in ${LIPSYNC_PROTOBUF_SRC}: run scripts/setup.sh")
endif()
set(protobuf_BUILD_TESTS OFF CACHE BOOL "" FORCE)
set(protobuf_BUILD_CONFORMANCE OFF CACHE BOOL "" FORCE)
set(protobuf_BUILD_EXAMPLES OFF CACHE BOOL "" FORCE)
set(protobuf_BUILD_PROTOC_BINARIES OFF CACHE BOOL "" FORCE)
set(protobuf_BUILD_LIBPROTOC OFF CACHE BOOL "" FORCE)
set(protobuf_BUILD_SHARED_LIBS OFF CACHE BOOL "" FORCE)
set(protobuf_INSTALL OFF CACHE BOOL "" FORCE)
set(protobuf_WITH_ZLIB OFF CACHE BOOL "" FORCE)
add_subdirectory(${LIPSYNC_PROTOBUF_SRC} ${CMAKE_BINARY_DIR}/protobuf EXCLUDE_FROM_ALL SYSTEM)

find_program(LIPSYNC_PROTOC protoc REQUIRED)
set(onnx_gen ${CMAKE_BINARY_DIR}/onnx-gen)
add_custom_command(
  OUTPUT ${onnx_gen}/onnx/onnx.pb.cc ${onnx_gen}/onnx/onnx.pb.h
  COMMAND ${CMAKE_COMMAND} -E make_directory ${onnx_gen}/onnx
  COMMAND ${CMAKE_COMMAND} -E copy /usr/include/onnx/onnx_pb.h ${onnx_gen}/onnx/onnx_pb.h
  COMMAND ${LIPSYNC_PROTOC} --cpp_out=${onnx_gen} -I/usr/include /usr/include/onnx/onnx.proto
  DEPENDS /usr/include/onnx/onnx.proto /usr/include/onnx/onnx_pb.h
  COMMENT "Generating the ONNX messages (protobuf-lite)")
add_library(onnx_proto STATIC ${onnx_gen}/onnx/onnx.pb.cc)
target_include_directories(onnx_proto SYSTEM PUBLIC ${onnx_gen})
target_link_libraries(onnx_proto PUBLIC libprotobuf-lite)
set(LIPSYNC_PROTOBUF_TARGET libprotobuf-lite)

# Every executable in one folder with the DLLs it loads, as on a user's machine.
set(CMAKE_RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bin)
set(LIPSYNC_WINDOWS_DLLS
  ${ONNXRUNTIME_WIN_DIR}/bin/onnxruntime.dll ${ONNXRUNTIME_WIN_DIR}/bin/DirectML.dll
  ${ONNXRUNTIME_WIN_DIR}/bin/dxcompiler.dll ${ONNXRUNTIME_WIN_DIR}/bin/dxil.dll)
# MinGW's runtime: C++ and libgcc are linked in; threads and OpenMP come as DLLs.
foreach(dll libwinpthread-1.dll libgomp-1.dll libgcc_s_seh-1.dll)
  execute_process(COMMAND ${CMAKE_CXX_COMPILER} -print-file-name=${dll}
                  OUTPUT_VARIABLE path OUTPUT_STRIP_TRAILING_WHITESPACE)
  if(NOT EXISTS "${path}")
    find_file(path_${dll} ${dll} PATHS /usr/${LIPSYNC_MINGW_TRIPLE}/lib NO_CMAKE_FIND_ROOT_PATH)
    set(path ${path_${dll}})
  endif()
  if(NOT EXISTS "${path}")
    message(FATAL_ERROR "${dll} not found: install g++-mingw-w64-x86-64-posix")
  endif()
  list(APPEND LIPSYNC_WINDOWS_DLLS ${path})
endforeach()
file(COPY ${LIPSYNC_WINDOWS_DLLS} DESTINATION ${CMAKE_RUNTIME_OUTPUT_DIRECTORY})
add_link_options(-static-libgcc -static-libstdc++)
