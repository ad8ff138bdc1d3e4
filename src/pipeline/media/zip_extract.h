// Unpacking zip archives that come from clients (the Python server's model packages), with
// libzip, so that no archive can write outside its folder or fill the disk.
#pragma once

#include <string>

#include "lipsync/avatar.h"

namespace lipsync::internal {

// Unpacks `zip_path` into the existing, empty folder `dest`. Entry names use '/' (or '\' as some
// Windows tools write) between folders; a name that is absolute, has a drive letter or a ".."
// part, a symbolic link entry, an encrypted entry, or two entries with one name are refused
// before or while writing. The archive's declared sizes and the bytes actually inflated are both
// held to `limits` (a zip bomb stops at the limit). Errors: InvalidArgument for a refused entry,
// ResourceExhausted past a limit, DataLoss for an archive that is not a readable zip or an entry
// that does not inflate (CRC mismatch, truncation). On error `dest` may hold part of the archive:
// the caller removes it.
Status ExtractZip(const std::string& zip_path, const std::string& dest, const ZipLimits& limits);

// True when the file starts with a zip signature or is named *.zip.
bool LooksLikeZip(const std::string& path);

}  // namespace lipsync::internal
