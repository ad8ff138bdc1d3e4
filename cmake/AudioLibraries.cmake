# FFmpeg (decoding and resampling audio) and FFTW (the mel spectrogram's FFT) as imported targets
# ffmpeg::audio and fftw::double, found with pkg-config (Debian: libavformat-dev libavcodec-dev
# libswresample-dev libfftw3-dev).
find_package(PkgConfig REQUIRED)
# With LIPSYNC_FFMPEG_PREFIX, pkg-config finds FFmpeg there first and lists what a static link
# needs (libx264, libsoxr, zlib, ...); ON before the FFmpeg look-ups, OFF after.
macro(lipsync_ffmpeg_pkg_config on)
  if(LIPSYNC_FFMPEG_PREFIX AND ${on})
    set(lipsync_saved_pkg_config_path "$ENV{PKG_CONFIG_PATH}")
    set(ENV{PKG_CONFIG_PATH} "${LIPSYNC_FFMPEG_PREFIX}/lib/pkgconfig:$ENV{PKG_CONFIG_PATH}")
    set(PKG_CONFIG_ARGN --static)
  elseif(LIPSYNC_FFMPEG_PREFIX)
    set(ENV{PKG_CONFIG_PATH} "${lipsync_saved_pkg_config_path}")
    unset(PKG_CONFIG_ARGN)
  endif()
endmacro()
lipsync_ffmpeg_pkg_config(ON)
pkg_check_modules(LIPSYNC_FFMPEG IMPORTED_TARGET GLOBAL libavformat libavcodec libavutil libswresample)
lipsync_ffmpeg_pkg_config(OFF)
if(NOT LIPSYNC_FFMPEG_FOUND)
  message(FATAL_ERROR "FFmpeg libraries not found: install libavformat-dev libavcodec-dev libswresample-dev")
endif()
pkg_check_modules(LIPSYNC_FFTW IMPORTED_TARGET GLOBAL fftw3)
if(NOT LIPSYNC_FFTW_FOUND)
  message(FATAL_ERROR "FFTW not found: install libfftw3-dev")
endif()
add_library(ffmpeg::audio ALIAS PkgConfig::LIPSYNC_FFMPEG)
add_library(fftw::double ALIAS PkgConfig::LIPSYNC_FFTW)
