#!/usr/bin/env bash
# Writes a kubeconfig that acts as a ServiceAccount through impersonation: the current context of
# $KUBECONFIG (whose user must be allowed to impersonate, e.g. cluster-admin), with
# `as: system:serviceaccount:<ns>:<sa>` and the groups the API server gives that account.
# A program using it gets exactly the account's permissions, without a token.
#
#   impersonate-kubeconfig.sh NAMESPACE SERVICEACCOUNT OUTPUT
#
# Needs kubectl and python3. Used by chart.sh (the RBAC proof) and the e2e suite.
set -euo pipefail

[[ $# -eq 3 ]] || { echo "usage: $0 NAMESPACE SERVICEACCOUNT OUTPUT" >&2; exit 2; }
ns=$1 sa=$2 out=$3

kubectl config view --raw --minify --flatten -o json | python3 -c '
import json, sys
ns, sa = sys.argv[1], sys.argv[2]
config = json.load(sys.stdin)
for entry in config["users"]:
    entry["user"]["as"] = f"system:serviceaccount:{ns}:{sa}"
    entry["user"]["as-groups"] = [
        "system:serviceaccounts",
        f"system:serviceaccounts:{ns}",
        "system:authenticated",
    ]
json.dump(config, sys.stdout, indent=2)
' "$ns" "$sa" >"$out.tmp"
chmod 600 "$out.tmp"
mv "$out.tmp" "$out"
