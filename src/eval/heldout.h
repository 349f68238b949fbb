// Built-in texts from the paper: the diagnostic prompt and the 12 held-out PPL prompts
// (Schallon 2026, Appendix A).
#pragma once

#include <string>
#include <vector>

namespace hs {

extern const char* const kDiagnosticPrompt;
const std::vector<std::string>& heldout_prompts();

}  // namespace hs
