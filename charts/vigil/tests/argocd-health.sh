#!/usr/bin/env bash
# Runs the Argo CD health checks (argocd/health.lua.d/<group>/<Kind>/health.lua) against their
# samples (health_test.yaml, the layout of Argo CD's resource_customizations) with a Lua
# interpreter; prints PASS/FAIL per sample and "N passed, M failed".
#
# Needs python3 with PyYAML and lua (lua5.4, lua5.1 or luajit; `apt-get install -y lua5.4`).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../argocd/health.lua.d" && pwd)
lua=${LUA:-$(command -v lua5.1 || command -v luajit || command -v lua5.4 || command -v lua || true)}
[[ -n $lua ]] || { echo "FAIL no Lua interpreter (apt-get install -y lua5.4)"; echo "0 passed, 1 failed"; exit 1; }

python3 - "$root" "$lua" <<'PY'
import json, os, subprocess, sys, tempfile, yaml

root, lua = sys.argv[1], sys.argv[2]

def literal(value):
    """A Lua table constructor for a YAML value; nulls become absent keys, as in Argo CD."""
    if isinstance(value, dict):
        items = [f"[{json.dumps(str(k))}] = {literal(v)}" for k, v in value.items() if v is not None]
        return "{" + ", ".join(items) + "}"
    if isinstance(value, list):
        return "{" + ", ".join(literal(v) for v in value) + "}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value))

passed = failed = 0
for group in sorted(os.listdir(root)):
    for kind in sorted(os.listdir(os.path.join(root, group))):
        folder = os.path.join(root, group, kind)
        script = os.path.join(folder, "health.lua")
        with open(os.path.join(folder, "health_test.yaml")) as f:
            tests = yaml.safe_load(f)["tests"]
        for test in tests:
            with open(os.path.join(folder, test["inputPath"])) as f:
                obj = yaml.safe_load(f)
            harness = (
                f"obj = {literal(obj)}\n"
                f"local hs = dofile({json.dumps(script)})\n"
                "io.write(tostring(hs.status), '\\n', tostring(hs.message))\n"
            )
            with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as h:
                h.write(harness)
            run = subprocess.run([lua, h.name], capture_output=True, text=True)
            os.unlink(h.name)
            name = f"{group}/{kind} {test['inputPath']}"
            want = test["healthStatus"]
            if run.returncode != 0:
                got = run.stderr.strip()
            else:
                status, _, message = run.stdout.partition("\n")
                got = {"status": status, "message": message}
            if got == {"status": want["status"], "message": want.get("message", "nil")}:
                passed += 1
                print(f"PASS {name}: {want['status']} ({want.get('message', '')})")
            else:
                failed += 1
                print(f"FAIL {name}: want {want}, got {got}")
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
PY
