#!/usr/bin/env python3
"""Checks rendered Kubernetes manifests beyond their schema:

- every pod meets the Pod Security "restricted" profile (non-root numeric user, the
  RuntimeDefault seccomp profile, no privilege escalation, every capability dropped,
  read-only root filesystem, no host namespaces or host paths);
- every PUBSUB_* variable and every --flag a container passes is one its pubsubd role
  accepts (read from `pubsubd ROLE --help`).

Usage: check-manifests.py PUBSUBD RENDERED.yaml...
"""
import re
import subprocess
import sys

import yaml

ROLES = ["standalone", "cluster-manager", "broker", "consumer-manager"]


def accepted(pubsubd, role):
    out = subprocess.run([pubsubd, role, "--help"], capture_output=True, text=True, check=True).stdout
    return set(re.findall(r"--[a-z0-9-]+", out)), set(re.findall(r"PUBSUB_[A-Z0-9_]+", out))


def role_of(container):
    words = " ".join(container.get("command", []) + container.get("args", []))
    found = [r for r in ROLES if re.search(r"(^|\s)%s(\s|$)" % r, words)]
    return found[0] if found else None


def check_pod(name, spec, problems):
    pod = spec.get("securityContext", {})
    if pod.get("runAsNonRoot") is not True:
        problems.append(f"{name}: runAsNonRoot is not true")
    if not isinstance(pod.get("runAsUser"), int) or pod.get("runAsUser") == 0:
        problems.append(f"{name}: runAsUser is not a numeric non-root uid")
    if pod.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        problems.append(f"{name}: seccompProfile is not RuntimeDefault")
    for key in ["hostNetwork", "hostPID", "hostIPC"]:
        if spec.get(key):
            problems.append(f"{name}: {key}")
    for volume in spec.get("volumes", []):
        if "hostPath" in volume:
            problems.append(f"{name}: hostPath volume {volume.get('name')}")
    for container in spec.get("containers", []) + spec.get("initContainers", []):
        context = container.get("securityContext", {})
        where = f"{name}/{container['name']}"
        if context.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{where}: allowPrivilegeEscalation is not false")
        if "ALL" not in context.get("capabilities", {}).get("drop", []):
            problems.append(f"{where}: capabilities do not drop ALL")
        if context.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{where}: root filesystem is writable")
        if context.get("privileged"):
            problems.append(f"{where}: privileged")


def check_flags(name, container, pubsubd, problems):
    role = role_of(container)
    if role is None:
        problems.append(f"{name}: cannot tell which pubsubd role the container runs")
        return
    flags, variables = accepted(pubsubd, role)
    for env in container.get("env", []):
        if env["name"].startswith("PUBSUB_") and env["name"] not in variables:
            problems.append(f"{name}: pubsubd {role} takes no {env['name']}")
    words = " ".join(container.get("command", []) + container.get("args", []))
    for flag in re.findall(r"(--[a-z0-9-]+)", words):
        if flag not in flags:
            problems.append(f"{name}: pubsubd {role} takes no {flag}")


def main():
    pubsubd, files = sys.argv[1], sys.argv[2:]
    problems, pods = [], 0
    for path in files:
        with open(path) as f:
            for doc in yaml.safe_load_all(f):
                if not doc or doc.get("kind") not in ("StatefulSet", "Deployment", "DaemonSet"):
                    continue
                name = f"{path}: {doc['kind']}/{doc['metadata']['name']}"
                spec = doc["spec"]["template"]["spec"]
                pods += 1
                check_pod(name, spec, problems)
                for container in spec.get("containers", []):
                    check_flags(name, container, pubsubd, problems)
    for problem in problems:
        print("manifest check:", problem)
    print(f"manifest check: {pods} pod templates, {len(problems)} problems")
    sys.exit(1 if problems or pods == 0 else 0)


if __name__ == "__main__":
    main()
