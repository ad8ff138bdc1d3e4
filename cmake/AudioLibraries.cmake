# FFmpeg (decoding and resampling audio) and FFTW (the mel spectrogram's FFT) as imported targets
# ffmpeg::audio and fftw::double, found with pkg-config (Debian: libavformat-dev libavcodec-dev
# libswresample-dev libfftw3-dev).
find_package(PkgConfig REQUIRED)
pkg_check_modules(LIPSYNC_FFMPEG IMPORTED_TARGET GLOBAL libavformat libavcodec libavutil libswresample)
if(NOT LIPSYNC_FFMPEG_FOUND)
  message(FATAL_ERROR "FFmpeg libraries not found: install libavformat-dev libavcodec-dev libswresample-dev")
endif()
pkg_check_modules(LIPSYNC_FFTW IMPORTED_TARGET GLOBAL fftw3)
if(NOT LIPSYNC_FFTW_FOUND)
  message(FATAL_ERROR "FFTW not found: install libfftw3-dev")
endif()
add_library(ffmpeg::audio ALIAS PkgConfig::LIPSYNC_FFMPEG)
add_library(fftw::double ALIAS PkgConfig::LIPSYNC_FFTW)
