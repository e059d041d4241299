#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""The remote repositories a kas file uses, its includes' included, one per
line as "NAME COMMIT" (the commit the file pins).

    kasrepos.py KAS_FILE
"""
import os
import sys

import yaml


def repos(path, seen=None):
    seen = set() if seen is None else seen
    cfg = yaml.safe_load(open(path))
    found = {}
    for inc in cfg.get("header", {}).get("includes", []):
        inc_path = os.path.join(os.path.dirname(path), inc)
        if inc_path not in seen:
            seen.add(inc_path)
            found.update(repos(inc_path, seen))
    for name, repo in (cfg.get("repos") or {}).items():
        if repo and repo.get("url"):
            if not repo.get("commit"):
                sys.exit(f"{path}: {name} is not pinned by a commit")
            found[name] = repo["commit"]
    return found


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    for name, commit in repos(sys.argv[1]).items():
        print(name, commit)
