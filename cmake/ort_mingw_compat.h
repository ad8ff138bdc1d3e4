// Forced ahead of ONNX Runtime's headers in the MinGW build: on Windows they spell the calling
// convention MSVC's way (_stdcall), which MinGW knows only as __stdcall. (Without _MSC_VER they
// define most SAL annotations they use themselves.)
#pragma once
#ifndef _stdcall
#define _stdcall __stdcall
#endif
// The one SAL annotation they use outside that block (on OrtStatusPtr).
#ifndef _Return_type_success_
#define _Return_type_success_(expr)
#endif
