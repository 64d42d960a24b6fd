// PLACEHOLDER (being written): registers nothing yet.
#include <pybind11/pybind11.h>
namespace desra {
void bind_emulator(pybind11::module_& m) {}
}  // namespace desra
