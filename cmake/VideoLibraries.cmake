# Video files and avatar import: FFmpeg's codec, container and scaling libraries as the imported
# target ffmpeg::video (pkg-config; Debian: libavcodec-dev libavformat-dev libswscale-dev
# libswresample-dev) and yaml-cpp (libyaml-cpp-dev) for the Go server's config.yaml.
find_package(PkgConfig REQUIRED)
lipsync_ffmpeg_pkg_config(ON)
pkg_check_modules(LIPSYNC_FFMPEG_VIDEO IMPORTED_TARGET GLOBAL
  libavformat libavcodec libavutil libswscale libswresample)
lipsync_ffmpeg_pkg_config(OFF)
if(NOT LIPSYNC_FFMPEG_VIDEO_FOUND)
  message(FATAL_ERROR "FFmpeg libraries not found: install libavcodec-dev libavformat-dev libswscale-dev libswresample-dev")
endif()
add_library(ffmpeg::video ALIAS PkgConfig::LIPSYNC_FFMPEG_VIDEO)
find_package(yaml-cpp REQUIRED)
# The Python server's zip model packages are unpacked with libzip (libzip-dev).
pkg_check_modules(LIPSYNC_LIBZIP IMPORTED_TARGET GLOBAL libzip)
if(NOT LIPSYNC_LIBZIP_FOUND)
  message(FATAL_ERROR "libzip not found: install libzip-dev")
endif()
add_library(libzip::zip ALIAS PkgConfig::LIPSYNC_LIBZIP)
