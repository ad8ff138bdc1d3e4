# The few OpenCV modules lipsync uses, as imported targets opencv::<module>: core and imgproc
# (resizing, bicubic as the users' Python does). Image files go through libpng and TurboJPEG
# (cmake/ImageLibraries.cmake); OpenCV's codecs (imgcodecs) only serve the tests, as an
# independent reference. Debian splits OpenCV into per-module -dev packages; only libopencv-dev
# (which pulls in every module) ships the CMake config, so the modules are found directly.
find_path(LIPSYNC_OPENCV_INCLUDE_DIR opencv2/core.hpp PATH_SUFFIXES opencv4)
if(NOT LIPSYNC_OPENCV_INCLUDE_DIR)
  message(FATAL_ERROR "OpenCV headers not found: install libopencv-imgproc-dev")
endif()
set(LIPSYNC_OPENCV_MODULES core imgproc)
if(LIPSYNC_BUILD_TESTS)
  list(APPEND LIPSYNC_OPENCV_MODULES imgcodecs)
endif()
foreach(module ${LIPSYNC_OPENCV_MODULES})
  find_library(LIPSYNC_OPENCV_${module} opencv_${module})
  if(NOT LIPSYNC_OPENCV_${module})
    message(FATAL_ERROR "OpenCV module ${module} not found: install libopencv-${module}-dev")
  endif()
  add_library(opencv::${module} SHARED IMPORTED GLOBAL)
  set_target_properties(opencv::${module} PROPERTIES
    IMPORTED_LOCATION ${LIPSYNC_OPENCV_${module}}
    INTERFACE_INCLUDE_DIRECTORIES ${LIPSYNC_OPENCV_INCLUDE_DIR})
endforeach()
