// Reading JSON files with errors that name the file and the field at fault.
#pragma once

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

namespace dsmath {

using Json = nlohmann::json;

// Parses a whole file; throws Error("<file>: <parser message>") when unreadable or invalid.
Json read_json_file(const std::filesystem::path& path);

}  // namespace dsmath
