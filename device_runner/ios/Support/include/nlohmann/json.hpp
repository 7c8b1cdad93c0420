// nlohmann/json comes from its Swift package (project.yml: package nlohmann-json, product json),
// whose public header folder is single_include/nlohmann: there the header is <json.hpp>. The core
// includes it as <nlohmann/json.hpp>, so this forwards.
#pragma once
#include <json.hpp>
