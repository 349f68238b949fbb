#include "eval/heldout.h"

namespace hs {

const char* const kDiagnosticPrompt =
    "The container holds the boundary. The boundary defines the edge. The edge separates inside "
    "from outside. Inside and outside depend on the container. Memory persists through "
    "structure, not content. What remains after deletion is the shape of what was deleted.";

const std::vector<std::string>& heldout_prompts() {
  static const std::vector<std::string> prompts = {
      "The river carried sediment downstream, depositing layers that would eventually become "
      "stone.",
      "Because the experiment failed three times, the researcher redesigned the protocol "
      "entirely.",
      "A symphony orchestra tunes to the oboe because its pitch is the most stable and "
      "penetrating.",
      "async function fetchData(url) { const response = await fetch(url); return "
      "response.json(); }",
      "SELECT users.name, orders.total FROM users JOIN orders ON users.id = orders.user_id WHERE "
      "orders.total > 100;",
      "fn fibonacci(n: u64) -> u64 { match n { 0 => 0, 1 => 1, _ => fibonacci(n-1) + "
      "fibonacci(n-2), } }",
      "The map is not the territory, but without maps we cannot navigate territories we haven't "
      "visited.",
      "Every recursive function must have a base case; every recursive argument must have a "
      "ground truth.",
      "La structure du langage reflète la structure de la pensée, mais la pensée dépasse "
      "toujours le langage.",
      "Das Ganze ist mehr als die Summe seiner Teile, aber die Teile definieren das Ganze.",
      "The attention mechanism computes a weighted sum over value vectors, where weights are "
      "derived from query-key dot products.",
      "In distributed systems, the CAP theorem states that consistency, availability, and "
      "partition tolerance cannot all be simultaneously guaranteed.",
  };
  return prompts;
}

}  // namespace hs
