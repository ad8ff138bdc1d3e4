# Image files and bytes: libpng for PNG and libjpeg-turbo's TurboJPEG for JPEG, as the imported
# targets PNG::PNG and turbojpeg::turbojpeg (Debian: libpng-dev libturbojpeg0-dev). Two small
# libraries with no dependencies of their own beyond zlib, where OpenCV's image codecs bring in
# GDAL, OpenEXR, TIFF, WebP and a hundred more libraries.
find_package(PNG REQUIRED)
find_package(PkgConfig REQUIRED)
pkg_check_modules(LIPSYNC_TURBOJPEG IMPORTED_TARGET GLOBAL libturbojpeg)
if(NOT LIPSYNC_TURBOJPEG_FOUND)
  message(FATAL_ERROR "TurboJPEG not found: install libturbojpeg0-dev")
endif()
add_library(turbojpeg::turbojpeg ALIAS PkgConfig::LIPSYNC_TURBOJPEG)
