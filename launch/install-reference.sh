#!/usr/bin/env bash
# The reference implementations the tests cross-check against and the golden generators use:
# Debian's python3-torch (1.13, CPU) and a venv at ${DSMATH_HF_VENV:-/opt/hfref} with pinned
# Hugging Face transformers/tokenizers. Tests that need them skip when they are absent; CI
# installs them so nothing is skipped there.
set -euo pipefail
VENV=${DSMATH_HF_VENV:-/opt/hfref}
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

need=()
for p in python3-torch python3-venv python3-pip; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

if ! "$VENV/bin/python" -c 'import transformers, tokenizers, sentencepiece, jinja2' 2>/dev/null; then
  $SUDO /usr/bin/python3 -m venv --system-site-packages "$VENV"
  $SUDO "$VENV/bin/pip" install -q --disable-pip-version-check \
    transformers==4.40.2 tokenizers==0.19.1 safetensors==0.4.3 sentencepiece==0.2.3 jinja2==3.1.4
fi
"$VENV/bin/python" -c 'import torch, transformers, tokenizers; print("reference:", "torch", torch.__version__, "transformers", transformers.__version__, "tokenizers", tokenizers.__version__)'
