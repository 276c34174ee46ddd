# Sourced by setup.sh and test_tl3.sh. `make_venv DIR` creates the virtualenv DIR with $PYTHON (default
# python3) unless it is there, sets the array `pip` to its quiet `pip install`, and installs torch's CPU
# build first, so no dependency pulls a multi-GB CUDA build of torch.
make_venv() {
  local venv="$1" python="${PYTHON:-python3}"
  if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
  fi
  pip=("$venv/bin/python" -m pip install --disable-pip-version-check -q)
  "$venv/bin/python" -c "import torch" 2>/dev/null || "${pip[@]}" "torch==2.13.0"
}
